package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// maxMessageBytes is the largest message a peer may send: a full chunk and
// its envelope. It matches the server's limit.
const maxMessageBytes = chunkstore.MaxChunkSize + 64<<10

// windowBytes is the HTTP/2 flow-control window per stream: two full
// chunks, so a peer never waits for a window update on loopback or a LAN,
// while the bytes a peer can push ahead of the client stay bounded (peak
// memory is about peers x 2 windows).
const windowBytes = 2 << 20

// DialOptions are the gRPC options shoal clients use by default:
// plaintext and TuningOptions.
func DialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, TuningOptions()...)
}

// TuningOptions are flow-control windows sized for whole chunks and the
// message limit; add them to dial options that carry credentials.
func TuningOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(windowBytes),
		grpc.WithInitialConnWindowSize(2 * windowBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
		grpc.WithReadBufferSize(256 << 10),
	}
}

// Registry finds a file through a shoal registry and fetches it from gRPC
// peers. It satisfies Discoverer.
type Registry struct {
	// Target is the file: a content id, or a name the registry knows.
	Target string
	// Conn reaches the registry.
	Conn grpc.ClientConnInterface
	// DialOptions reach the peers; nil means DialOptions().
	DialOptions []grpc.DialOption

	mu sync.Mutex
	m  *chunkstore.Manifest // set by Manifest; guarded by mu
}

// lookup asks the registry for the file and up to limit peers.
func (r *Registry) lookup(ctx context.Context, exclude []string, limit int) (*shoalv1.LookupResponse, error) {
	req := &shoalv1.LookupRequest{Limit: uint32(limit), Exclude: exclude}
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	switch {
	case m != nil:
		req.File = &shoalv1.LookupRequest_ContentId{ContentId: m.ID.String()}
	default:
		if _, err := chunkstore.ParseID(r.Target); err == nil {
			req.File = &shoalv1.LookupRequest_ContentId{ContentId: r.Target}
		} else {
			req.File = &shoalv1.LookupRequest_Name{Name: r.Target}
		}
	}
	resp, err := shoalv1.NewRegistryServiceClient(r.Conn).Lookup(ctx, req)
	if err != nil {
		return nil, fromStatus("registry lookup", err)
	}
	return resp, nil
}

// Manifest looks the file up and fetches its manifest from the holders,
// accepting the first that hashes to the content id. The manifest is
// kept: later calls return it without asking again.
func (r *Registry) Manifest(ctx context.Context) (*chunkstore.Manifest, error) {
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	if m != nil {
		return m, nil
	}
	resp, err := r.lookup(ctx, nil, 8)
	if err != nil {
		return nil, err
	}
	id, err := chunkstore.ParseID(resp.GetFile().GetContentId())
	if err != nil {
		return nil, fmt.Errorf("registry answered a bad content id: %w", err)
	}
	var errs []error
	for _, p := range resp.GetPeers() {
		m, err := r.fetchManifest(ctx, p.GetAddress(), id)
		if err == nil {
			r.mu.Lock()
			r.m = m
			r.mu.Unlock()
			return m, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNoPeers)
	}
	return nil, fmt.Errorf("no holder gave a valid manifest for %s: %w", id, errors.Join(errs...))
}

func (r *Registry) dialOptions() []grpc.DialOption {
	if r.DialOptions != nil {
		return r.DialOptions
	}
	return DialOptions()
}

func (r *Registry) fetchManifest(ctx context.Context, addr string, id chunkstore.ID) (*chunkstore.Manifest, error) {
	cc, err := grpc.NewClient(addr, r.dialOptions()...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	resp, err := shoalv1.NewPeerServiceClient(cc).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_ContentId{ContentId: id.String()}})
	if err != nil {
		return nil, fromStatus("manifest from "+addr, err)
	}
	m, err := ManifestFromWire(resp.GetManifest())
	if err != nil {
		return nil, fmt.Errorf("manifest from %s: %w", addr, err)
	}
	if err := m.Verify(id); err != nil {
		return nil, fmt.Errorf("manifest from %s: %w", addr, err)
	}
	return m, nil
}

// ManifestFromWire converts a wire manifest; Verify it before use.
func ManifestFromWire(w *shoalv1.Manifest) (*chunkstore.Manifest, error) {
	if w.GetChunkSize() == 0 || w.GetChunkSize() > chunkstore.MaxChunkSize || w.GetSize() > 1<<50 {
		return nil, fmt.Errorf("%w: size %d, chunk size %d", chunkstore.ErrBadManifest, w.GetSize(), w.GetChunkSize())
	}
	m := &chunkstore.Manifest{Name: w.GetName(), Size: int64(w.GetSize()), ChunkSize: int(w.GetChunkSize()), Hashes: make([]chunkstore.Hash, len(w.GetChunkHashes()))}
	for i, h := range w.GetChunkHashes() {
		if len(h) != chunkstore.HashSize {
			return nil, fmt.Errorf("%w: chunk hash %d is %d bytes", chunkstore.ErrBadManifest, i, len(h))
		}
		copy(m.Hashes[i][:], h)
	}
	return m, nil
}

// Discover returns up to limit holders not in exclude.
func (r *Registry) Discover(ctx context.Context, exclude []string, limit int) ([]Source, error) {
	resp, err := r.lookup(ctx, exclude, limit)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	var out []Source
	for _, p := range resp.GetPeers() {
		cc, err := grpc.NewClient(p.GetAddress(), r.dialOptions()...)
		if err != nil {
			continue
		}
		partial := false
		for _, f := range p.GetFiles() {
			partial = partial || f.GetPartial()
		}
		out = append(out, &Peer{id: p.GetPeerId(), addr: p.GetAddress(), cc: cc, m: m, partial: partial})
	}
	return out, nil
}

// Peer is a gRPC peer serving one file. It satisfies HaveSource.
type Peer struct {
	id, addr string
	cc       *grpc.ClientConn
	m        *chunkstore.Manifest
	partial  bool // registered as holding part of the file
}

// Partial reports whether the peer registered as a partial holder.
func (p *Peer) Partial() bool { return p.partial }

// WatchHave follows the peer's WatchHave stream.
func (p *Peer) WatchHave(ctx context.Context, fn func(have []bool, added []int)) error {
	stream, err := shoalv1.NewPeerServiceClient(p.cc).WatchHave(ctx, &shoalv1.WatchHaveRequest{ContentId: p.m.ID.String()})
	if err != nil {
		return fromStatus("have feed", err)
	}
	n := p.m.NumChunks()
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fromStatus("have feed", err)
		}
		var have []bool
		if bm := msg.GetBitmap(); len(bm) > 0 {
			if len(bm) != (n+7)/8 {
				return fmt.Errorf("%w: have bitmap of %d bytes for %d chunks", ErrProtocol, len(bm), n)
			}
			have = make([]bool, n)
			for i := range have {
				have[i] = bm[i/8]&(1<<(i%8)) != 0
			}
		}
		added := make([]int, 0, len(msg.GetAdded()))
		for _, i := range msg.GetAdded() {
			if int(i) >= n {
				return fmt.Errorf("%w: have of chunk %d of %d", ErrProtocol, i, n)
			}
			added = append(added, int(i))
		}
		fn(have, added)
	}
}

// NewPeer wraps a connection to a peer serving the file of m.
func NewPeer(id, addr string, cc *grpc.ClientConn, m *chunkstore.Manifest) *Peer {
	return &Peer{id: id, addr: addr, cc: cc, m: m}
}

// ID is the peer's registry id.
func (p *Peer) ID() string { return p.id }

// Addr is the peer's address.
func (p *Peer) Addr() string { return p.addr }

// Close closes the connection.
func (p *Peer) Close() error { return p.cc.Close() }

// Fetch streams the chunks with one GetChunks call, reassembling chunks
// that span several messages, and refuses anything it did not ask for.
// Chunk bytes are handed to got in the buffers gRPC read them into.
func (p *Peer) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	req := &shoalv1.GetChunksRequest{ContentId: p.m.ID.String(), Indexes: make([]uint32, len(chunks))}
	for k, i := range chunks {
		req.Indexes[k] = uint32(i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := p.cc.NewStream(ctx, &shoalv1.PeerService_ServiceDesc.Streams[0], shoalv1.PeerService_GetChunks_FullMethodName, grpc.ForceCodecV2(newChunkCodec()))
	if err != nil {
		return fromStatus("chunks", err)
	}
	if err := stream.SendMsg(req); err != nil {
		return fromStatus("chunks", err)
	}
	if err := stream.CloseSend(); err != nil {
		return fromStatus("chunks", err)
	}
	var (
		cur    = -1
		want   int
		filled int
		base   int64
		parts  []chunkMsg // the messages of chunk cur so far
		pieces [][]byte
	)
	defer func() {
		for k := range parts {
			parts[k].free()
		}
	}()
	for {
		var msg chunkMsg
		err := stream.RecvMsg(&msg)
		if errors.Is(err, io.EOF) {
			if cur >= 0 {
				return fmt.Errorf("%w: chunk %d cut short", ErrProtocol, cur)
			}
			return nil
		}
		if err != nil {
			return fromStatus("chunks", err)
		}
		parts = append(parts, msg)
		i := int(msg.index)
		if cur < 0 {
			if i >= p.m.NumChunks() {
				return fmt.Errorf("%w: chunk %d of %d", ErrProtocol, i, p.m.NumChunks())
			}
			cur, filled = i, 0
			base, want = p.m.ChunkBounds(i)
		}
		if i != cur || msg.offset != uint64(base)+uint64(filled) || filled+msg.size > want {
			return fmt.Errorf("%w: piece of chunk %d at offset %d (%d bytes) does not continue chunk %d", ErrProtocol, i, msg.offset, msg.size, cur)
		}
		filled += msg.size
		if filled < want {
			continue
		}
		pieces = pieces[:0]
		for k := range parts {
			pieces = parts[k].pieces(pieces)
		}
		err = got(i, pieces)
		for k := range parts {
			parts[k].free()
		}
		parts, cur = parts[:0], -1
		if err != nil {
			return err
		}
	}
}
