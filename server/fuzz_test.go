package server

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

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
