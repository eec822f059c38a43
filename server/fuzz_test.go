package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/memberlist"
	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// FuzzChunkList feeds GetChunks validation requests built from fuzz bytes:
// it must never panic, never return an index outside the file, and never
// more chunks than the limit.
func FuzzChunkList(f *testing.F) {
	seed := func(r *shoalv1.GetChunksRequest) {
		b, _ := proto.Marshal(r)
		f.Add(b, uint16(10))
	}
	seed(&shoalv1.GetChunksRequest{ContentId: "sh1x", Indexes: []uint32{0, 3, 9}})
	seed(&shoalv1.GetChunksRequest{Ranges: []*shoalv1.ChunkRange{{Start: 2, End: 5}, {Start: 9, End: 1}}})
	seed(&shoalv1.GetChunksRequest{Ranges: []*shoalv1.ChunkRange{{Start: 0, End: 1 << 31}}})
	f.Fuzz(func(t *testing.T, b []byte, n uint16) {
		var req shoalv1.GetChunksRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		const limit = 64
		got, err := chunkList(&req, int(n), limit)
		if err != nil {
			if !errors.Is(err, errInvalid) && !errors.Is(err, errTooLarge) && !errors.Is(err, chunkstore.ErrOutOfRange) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(got) == 0 || len(got) > limit {
			t.Fatalf("%d chunks accepted, limit %d", len(got), limit)
		}
		for _, i := range got {
			if i < 0 || i >= int(n) {
				t.Fatalf("chunk %d accepted for a %d-chunk file", i, n)
			}
		}
	})
}

// manifestFiles serves manifests only, for request validation.
type manifestFiles struct {
	byID map[chunkstore.ID]*chunkstore.Manifest
}

func (manifestFiles) ManifestByName(string) (*chunkstore.Manifest, error) {
	return nil, chunkstore.ErrNotFound
}
func (manifestFiles) OpenChunks(chunkstore.ID) (ChunkReader, error) {
	return nil, chunkstore.ErrNotFound
}
func (manifestFiles) WatchHave(context.Context, chunkstore.ID, func([]bool, []int, bool) error) error {
	return chunkstore.ErrNotFound
}

func (m manifestFiles) Manifest(id chunkstore.ID) (*chunkstore.Manifest, error) {
	if x, ok := m.byID[id]; ok {
		return x, nil
	}
	return nil, chunkstore.ErrNotFound
}

// FuzzGetChunksFiles feeds GetChunks requests naming several files: they
// must never panic, never pass a file the peer does not hold or a chunk
// outside its file, and never more chunks than the limit over all files.
func FuzzGetChunksFiles(f *testing.F) {
	files := manifestFiles{byID: map[chunkstore.ID]*chunkstore.Manifest{}}
	var ids []string
	for k, size := range []int64{1, 100_000, 3 << 20} {
		m := &chunkstore.Manifest{Name: fmt.Sprint(k), Size: size, ChunkSize: chunkstore.ChunkSizeFor(size)}
		m.Hashes = make([]chunkstore.Hash, (size+int64(m.ChunkSize)-1)/int64(m.ChunkSize))
		m.ID = chunkstore.ComputeID(m.Size, m.ChunkSize, m.Hashes)
		files.byID[m.ID] = m
		ids = append(ids, m.ID.String())
	}
	seed := func(r *shoalv1.GetChunksRequest) {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	seed(&shoalv1.GetChunksRequest{Files: []*shoalv1.FileChunks{{ContentId: ids[0], Indexes: []uint32{0}}, {ContentId: ids[2], Indexes: []uint32{3, 1, 40}}}})
	seed(&shoalv1.GetChunksRequest{ContentId: ids[1], Files: []*shoalv1.FileChunks{{ContentId: ids[1], Indexes: []uint32{0}}}})
	seed(&shoalv1.GetChunksRequest{Files: []*shoalv1.FileChunks{{ContentId: ids[1]}, {ContentId: "sh1nope", Indexes: []uint32{1}}}})
	p := NewPeerService(files, PeerConfig{MaxChunksPerRequest: 64}, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req shoalv1.GetChunksRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		got, err := p.requested(&req)
		if err != nil {
			return
		}
		total := 0
		for _, fc := range got {
			m, ok := files.byID[fc.id]
			if !ok {
				t.Fatalf("file %s passed, not held", fc.id)
			}
			for _, i := range fc.chunks {
				if i < 0 || i >= m.NumChunks() {
					t.Fatalf("chunk %d of a %d-chunk file passed", i, m.NumChunks())
				}
			}
			total += len(fc.chunks)
		}
		if total == 0 || total > 64 {
			t.Fatalf("%d chunks passed, limit 64", total)
		}
	})
}

// FuzzAnnounce feeds Announce validation requests built from fuzz bytes.
func FuzzAnnounce(f *testing.F) {
	seed := func(r *shoalv1.AnnounceRequest) {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	seed(&shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "p", Address: "127.0.0.1:7070",
		Files: []*shoalv1.FileInfo{{ContentId: "sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyca", Name: "f", Size: 3}}}})
	seed(&shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "", Address: "[::1]:0"}})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req shoalv1.AnnounceRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		l := NewLeases(LeaseConfig{MaxPeers: 4, MaxFilesPerPeer: 8})
		p, err := peerFromWire(req.GetPeer())
		if err != nil {
			return
		}
		if _, _, err := l.Announce(p, ""); err != nil {
			return
		}
		// Accepted: it must be findable and well formed.
		if err := validateAddr(p.Addr); err != nil || p.ID == "" || len(p.Files) > 8 {
			t.Fatalf("accepted a bad registration: %+v", p)
		}
		for _, f := range p.Files {
			if _, _, _, err := l.Lookup(f.ID, "", false, 1, nil); err != nil {
				t.Fatalf("announced file %s not found: %v", f.ID, err)
			}
		}
	})
}

// FuzzRegistryHandlers feeds every RegistryService handler requests built
// from fuzz bytes, against a table holding an owned registration: no
// handler may panic or answer with a code that blames the server, and the
// owned registration survives whatever is sent.
func FuzzRegistryHandlers(f *testing.F) {
	seed := func(which uint8, r proto.Message) {
		b, _ := proto.Marshal(r)
		f.Add(which, b)
	}
	victimID := chunkstore.ID{7}.String()
	seed(0, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "victim", Address: "127.0.0.1:1", Files: []*shoalv1.FileInfo{{ContentId: victimID, Name: "v"}}}, Secret: "guess"})
	seed(0, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "p", Address: "127.0.0.1:2", Files: []*shoalv1.FileInfo{{ContentId: victimID, Name: strings.Repeat("n", 4000)}}}})
	seed(1, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_Name{Name: ""}})
	seed(1, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_ContentId{ContentId: strings.Repeat("x", 10_000)}, Limit: 1 << 30})
	seed(1, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_Name{Name: "v"}, Exclude: []string{"victim"}})
	seed(2, &shoalv1.LeaveRequest{PeerId: "victim", Address: "127.0.0.1:9001"})
	seed(3, &shoalv1.ListFilesRequest{PageToken: "!!", PageSize: 1 << 31})
	seed(3, &shoalv1.ListFilesRequest{PageToken: pageToken("v", victimID)})
	seed(4, &shoalv1.MembersRequest{})
	f.Fuzz(func(t *testing.T, which uint8, b []byte) {
		leases := NewLeases(LeaseConfig{MaxPeers: 16, MaxFilesPerPeer: 8})
		victim := Peer{ID: "victim", Addr: "127.0.0.1:9001", Files: []FileInfo{{ID: chunkstore.ID{7}, Name: "v", Size: 1}}}
		if _, _, err := leases.Announce(victim, ""); err != nil {
			t.Fatal(err)
		}
		r := NewRegistryService(leases, nil)
		ctx := context.Background()
		var err error
		switch which % 5 {
		case 0:
			var req shoalv1.AnnounceRequest
			if proto.Unmarshal(b, &req) != nil {
				return
			}
			_, err = r.Announce(ctx, &req)
		case 1:
			var req shoalv1.LookupRequest
			if proto.Unmarshal(b, &req) != nil {
				return
			}
			_, err = r.Lookup(ctx, &req)
		case 2:
			var req shoalv1.LeaveRequest
			if proto.Unmarshal(b, &req) != nil {
				return
			}
			_, err = r.Leave(ctx, &req)
		case 3:
			var req shoalv1.ListFilesRequest
			if proto.Unmarshal(b, &req) != nil {
				return
			}
			_, err = r.ListFiles(ctx, &req)
		case 4:
			var req shoalv1.MembersRequest
			if proto.Unmarshal(b, &req) != nil {
				return
			}
			_, err = r.Members(ctx, &req)
		}
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			t.Fatalf("handler %d answered %v", which%5, err)
		}
		_, peers, _, lerr := leases.Lookup(chunkstore.ID{7}, "", false, 16, nil)
		found := false
		for _, p := range peers {
			found = found || p.ID == "victim" && p.Addr == victim.Addr
		}
		if lerr != nil || !found {
			t.Fatalf("handler %d with %x removed or re-pointed the owned registration: %v %v", which%5, b, peers, lerr)
		}
	})
}

// FuzzGossipMessage feeds the gossip receiver messages built from fuzz
// bytes (another registry's, or anyone's who reached the gossip port
// without a key): none may panic, outlive a lease, or touch a registration
// announced here.
func FuzzGossipMessage(f *testing.F) {
	entry := func(w *shoalv1.GossipEntry) []byte {
		b, _ := proto.Marshal(w)
		return append([]byte{gossipEntry}, b...)
	}
	batch := func(w *shoalv1.GossipBatch) []byte {
		b, _ := proto.Marshal(w)
		return append([]byte{gossipBatch}, b...)
	}
	victimID := chunkstore.ID{7}.String()
	f.Add(entry(&shoalv1.GossipEntry{ExpiresUnixMs: uint64(time.Now().Add(30 * time.Second).UnixMilli()), Peer: &shoalv1.PeerInfo{PeerId: "victim", Address: "127.0.0.1:1"}, Left: true}))
	f.Add(entry(&shoalv1.GossipEntry{ExpiresUnixMs: uint64(time.Now().Add(20 * time.Second).UnixMilli()), Peer: &shoalv1.PeerInfo{PeerId: "other", Address: "127.0.0.1:2", Files: []*shoalv1.FileInfo{{ContentId: victimID, Name: "v"}}}}))
	f.Add(entry(&shoalv1.GossipEntry{ExpiresUnixMs: 1 << 63, Peer: &shoalv1.PeerInfo{PeerId: "long", Address: "127.0.0.1:3"}}))
	f.Add(batch(&shoalv1.GossipBatch{Refreshes: []*shoalv1.GossipRefresh{{ExpiresUnixMs: uint64(time.Now().Add(29 * time.Second).UnixMilli()), PeerId: "victim", Digest: 1}}, Entries: []*shoalv1.GossipEntry{{ExpiresUnixMs: uint64(time.Now().Add(30 * time.Second).UnixMilli()), Peer: &shoalv1.PeerInfo{PeerId: "victim", Address: "127.0.0.1:1"}}}}))
	f.Add([]byte{9, 1, 2})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		leases := NewLeases(LeaseConfig{Lease: 30 * time.Second, MaxPeers: 16, MaxFilesPerPeer: 8})
		victim := Peer{ID: "victim", Addr: "127.0.0.1:9001", Files: []FileInfo{{ID: chunkstore.ID{7}, Name: "v", Size: 1}}}
		if _, _, err := leases.Announce(victim, ""); err != nil {
			t.Fatal(err)
		}
		g := &Gossip{leases: leases, pending: map[string]*entryBroadcast{}, queue: &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 2 }, RetransmitMult: 1}}
		g.receive(msg)
		g.receive(msg) // a second copy changes nothing more
		for _, e := range leases.Snapshot(100) {
			if e.Expires.After(time.Now().Add(30 * time.Second)) {
				t.Fatalf("entry %s learned with more than a lease: %v", e.ID, time.Until(e.Expires))
			}
		}
		_, peers, _, err := leases.Lookup(chunkstore.ID{7}, "", false, 16, nil)
		if err != nil || !slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == "victim" && p.Addr == victim.Addr }) {
			t.Fatalf("gossip %x removed or re-pointed the registration announced here: %v %v", msg, peers, err)
		}
	})
}
