package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// maxMessageBytes is the largest message a peer may send: a full chunk and
// its envelope. It matches the server's limit.
const maxMessageBytes = chunkstore.MaxChunkSize + 64<<10

// windowBytes is the HTTP/2 flow-control window per stream, twice that
// per connection: two full chunks, so a peer on loopback or a LAN never
// waits for a window update, while what peers push ahead of a client that
// reads slower than they send stays small. Five local peers with 12.8 MiB
// windows each filled 64 MiB of buffers: the client's CPU time doubled and
// its RSS reached 100 MiB.
const windowBytes = 2 << 20

// windowSlack is added to every window for the framing of the chunks it
// holds: a request of windowBytes of chunks then never waits for the
// client to read before its last message.
const windowSlack = 64 << 10

// A peer farther than widenAfter (its shortest round trip, see
// Download.probe) is moved to a connection with a wider window: a window of W
// holds a peer to W per round trip, 40 MB/s at 100 ms for 4 MiB, 80 MB/s
// at 50 ms. Below that a busy loopback cannot be told from a far peer. The peers
// of a download share windowBudget for their wide windows, at least
// minWindow each.
const (
	widenAfter   = 50 * time.Millisecond
	windowBudget = 64 << 20
	minWindow    = 4 << 20
)

// windowFor is a wide connection's window, each of its streams' too, for
// a download from peers peers at once.
func windowFor(peers int) int32 {
	return int32(max(minWindow, windowBudget/max(1, peers)))
}

// connectTimeout bounds one attempt to connect to a peer, handshake
// included.
const connectTimeout = 5 * time.Second

// DialOptions are the gRPC options shoal clients use by default:
// plaintext and TuningOptions.
func DialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, TuningOptions()...)
}

// TuningOptions are flow-control windows sized for whole chunks and the
// message limit; add them to dial options that carry credentials. A peer
// found far away is widened (see Peer.SetWindow). The windows are static:
// grpc-go's own estimate of the bandwidth-delay product, which a static
// window turns off, starts at 64 KiB and stops at 16 MiB.
func TuningOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(windowBytes + windowSlack),
		grpc.WithInitialConnWindowSize(2 * (windowBytes + windowSlack)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
		grpc.WithReadBufferSize(256 << 10),
		// A peer whose address accepts nothing, or accepts and never
		// speaks HTTP/2, fails its connection within 5 s instead of 20.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: connectTimeout}),
	}
}

// ManifestFromWire converts a wire manifest; Verify it before use.
func ManifestFromWire(w *shoalv1.Manifest) (*chunkstore.Manifest, error) {
	return chunkstore.NewManifest(w.GetName(), w.GetSize(), w.GetChunkSize(), w.GetChunkHashes())
}

// Peer is a gRPC peer serving one file or the files of a tree. It
// satisfies HaveSource.
type Peer struct {
	id, addr string
	lay      *layout
	partial  bool              // registered as holding part of the file or tree
	clientID string            // sent with WatchHave and GetChunks: one client over p's connections
	opts     []grpc.DialOption // how cc was dialed; nil if unknown: then it is not widened
	// connected is how long cc took to connect (a round trip for the
	// HTTP/2 handshake, plus TCP's and TLS's where they go as far), in ns,
	// 0 until known; nil if it is not timed: a first hint of the peer's
	// distance, taken before any data flowed.
	connected *atomic.Int64
	spare     *spareConn  // a wide connection dialed ahead for SetWindow; nil if none
	earlyReqs []*earlyReq // first requests sent before the manifest came

	mu     sync.Mutex
	cc     *grpc.ClientConn   // new requests go here; guarded by mu
	older  []*grpc.ClientConn // connections replaced by SetWindow, closed with the peer; guarded by mu
	closed bool               // guarded by mu
}

// clientIDKey is the metadata that names a client across its connections
// to a peer (see PeerService.WatchHave in the proto): a super-seeder
// counts what it sends over a widened connection against what it revealed
// over the first.
const clientIDKey = "shoal-client-id"

// newClientID is a random client id.
func newClientID() string {
	return rand.Text()[:16]
}

// asClient adds p's client id to ctx's outgoing metadata.
func (p *Peer) asClient(ctx context.Context) context.Context { return withClientID(ctx, p.clientID) }

// withClientID adds the client id id, if any, to ctx's outgoing metadata.
func withClientID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, clientIDKey, id)
}

// conn is the connection new requests use.
func (p *Peer) conn() *grpc.ClientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cc
}

// RoundTrip times one health check on the peer's connection: a round trip
// and the peer's own delay in answering.
func (p *Peer) RoundTrip(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	if _, err := healthpb.NewHealthClient(p.conn()).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return 0, fromStatus("health check", err)
	}
	return time.Since(t0), nil
}

// SetWindow moves the peer's later requests to a new connection whose
// windows are window bytes (0: the windows of the peer's dial options);
// requests under way finish on the old one, which closes with the peer. It
// reports whether it did: not for a peer without dial options.
func (p *Peer) SetWindow(window int32) bool {
	if p.opts == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	cc := p.spare.take(window)
	if cc == nil {
		var err error
		if cc, err = grpc.NewClient(p.addr, windowOptions(p.opts, window)...); err != nil {
			return false
		}
	}
	p.older = append(p.older, p.cc)
	p.cc = cc
	return true
}

// windowOptions are opts with windows of window bytes; 0 leaves opts'.
func windowOptions(opts []grpc.DialOption, window int32) []grpc.DialOption {
	if window <= 0 {
		return opts
	}
	return append(slices.Clip(opts), grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
}

// spareConn is a connection with wide windows dialed before it is needed
// (see warmPeer.timeConnect). The zero value holds none.
type spareConn struct {
	mu     sync.Mutex
	cc     *grpc.ClientConn // guarded by mu
	window int32            // cc's windows; guarded by mu
	done   bool             // taken or closed: no more spares; guarded by mu
}

// dial starts connecting a spare to addr with windows of window bytes,
// unless one was taken or closed already.
func (s *spareConn) dial(addr string, opts []grpc.DialOption, window int32) {
	if s == nil || opts == nil || window <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || s.cc != nil {
		return
	}
	cc, err := grpc.NewClient(addr, windowOptions(opts, window)...)
	if err != nil {
		return
	}
	cc.Connect()
	s.cc, s.window = cc, window
}

// take hands over the spare if its windows are window bytes, else nil;
// later spares are not dialed. An unfitting spare is closed.
func (s *spareConn) take(window int32) *grpc.ClientConn {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	cc := s.cc
	s.cc = nil
	if cc != nil && s.window != window {
		cc.Close()
		return nil
	}
	return cc
}

// close closes the spare, if not taken.
func (s *spareConn) close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.cc != nil {
		s.cc.Close()
		s.cc = nil
	}
}

func (p *Peer) connectTime() time.Duration {
	if p.connected == nil {
		return 0
	}
	return time.Duration(p.connected.Load())
}

// Partial reports whether the peer registered as a partial holder.
func (p *Peer) Partial() bool { return p.partial }

// WatchHave follows the peer's WatchHave stream.
func (p *Peer) WatchHave(ctx context.Context, fn func(have []bool, added []int)) error {
	ctx = p.asClient(ctx)
	stream, err := shoalv1.NewPeerServiceClient(p.conn()).WatchHave(ctx, &shoalv1.WatchHaveRequest{ContentId: p.lay.id})
	if err != nil {
		return fromStatus("have feed", err)
	}
	n := p.lay.chunks()
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
			if have, err = chunkstore.UnpackHave(bm, n); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
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
	return &Peer{id: id, addr: addr, cc: cc, lay: fileLayout(m), clientID: newClientID()}
}

// ID is the peer's registry id.
func (p *Peer) ID() string { return p.id }

// Addr is the peer's address.
func (p *Peer) Addr() string { return p.addr }

// Close closes the peer's connections.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, e := range p.earlyReqs {
		e.drop()
	}
	p.spare.close()
	for _, cc := range p.older {
		cc.Close()
	}
	p.older = nil
	return p.cc.Close()
}

// Fetch streams the chunks with one GetChunks call, reassembling chunks
// that span several messages, and refuses anything it did not ask for.
// Chunks of several files of a tree go in one call, each file named once
// per run of its chunks. Chunk bytes are handed to got in the buffers
// gRPC read them into.
func (p *Peer) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	req, files := p.request(chunks)
	stream, err := p.open(ctx, req, chunks)
	if err != nil {
		return err
	}
	defer stream.stop()
	var (
		cur    = -1 // the chunk being filled, in the download's chunk space
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
		if int(msg.file) >= len(files) {
			return fmt.Errorf("%w: a piece of file %d of a request for %d", ErrProtocol, msg.file, len(files))
		}
		k := files[msg.file]
		m := p.lay.files[k]
		if int(msg.index) >= chunkCount(m) {
			return fmt.Errorf("%w: chunk %d of %d", ErrProtocol, msg.index, chunkCount(m))
		}
		g := p.lay.first[k] + int(msg.index)
		if cur < 0 {
			cur, filled = g, 0
			base, want = m.ChunkBounds(int(msg.index))
		}
		if g != cur || msg.offset != uint64(base)+uint64(filled) || filled+msg.size > want {
			return fmt.Errorf("%w: piece of chunk %d at offset %d (%d bytes) does not continue chunk %d", ErrProtocol, g, msg.offset, msg.size, cur)
		}
		filled += msg.size
		if filled < want {
			continue
		}
		pieces = pieces[:0]
		for k := range parts {
			pieces = parts[k].pieces(pieces)
		}
		err = got(g, pieces)
		for k := range parts {
			parts[k].free()
		}
		parts, cur = parts[:0], -1
		if err != nil {
			return err
		}
	}
}

// chunkStream is a GetChunks call and what ends it.
type chunkStream struct {
	grpc.ClientStream
	stop func()
}

// open sends req, the request for chunks, or takes up the early request
// for them; the stream ends with ctx or stop.
func (p *Peer) open(ctx context.Context, req *shoalv1.GetChunksRequest, chunks []int) (chunkStream, error) {
	for _, e := range p.earlyReqs {
		if s, cancel := e.take(chunks); s != nil {
			unhook := context.AfterFunc(ctx, cancel)
			return chunkStream{s, func() { unhook(); cancel() }}, nil
		}
	}
	ctx, cancel := context.WithCancel(p.asClient(ctx))
	stream, err := sendChunks(ctx, p.conn(), req)
	if err != nil {
		cancel()
		return chunkStream{}, fromStatus("chunks", err)
	}
	return chunkStream{stream, cancel}, nil
}

// sendChunks opens a GetChunks call over cc, whose messages the chunk
// codec decodes in place, and sends req; the call lives as long as ctx.
func sendChunks(ctx context.Context, cc *grpc.ClientConn, req *shoalv1.GetChunksRequest) (grpc.ClientStream, error) {
	stream, err := cc.NewStream(ctx, &shoalv1.PeerService_ServiceDesc.Streams[0], shoalv1.PeerService_GetChunks_FullMethodName, grpc.ForceCodecV2(newChunkCodec()))
	if err != nil {
		return nil, err
	}
	if err := stream.SendMsg(req); err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	return stream, nil
}

func (p *Peer) early() []*earlyReq { return p.earlyReqs }

// fileRequest is the GetChunks request for chunks of the one file id.
func fileRequest(id string, chunks []int) *shoalv1.GetChunksRequest {
	req := &shoalv1.GetChunksRequest{ContentId: id, Indexes: make([]uint32, len(chunks))}
	for k, i := range chunks {
		req.Indexes[k] = uint32(i)
	}
	return req
}

// request is the GetChunks request for chunks, and the layout file of
// each position of its files (one position for a single file).
func (p *Peer) request(chunks []int) (*shoalv1.GetChunksRequest, []int) {
	if len(p.lay.files) == 1 {
		return fileRequest(p.lay.files[0].ID.String(), chunks), []int{0}
	}
	req := &shoalv1.GetChunksRequest{}
	var files []int
	var cur *shoalv1.FileChunks
	for _, g := range chunks {
		k, i := p.lay.locate(g)
		if cur == nil || files[len(files)-1] != k {
			cur = &shoalv1.FileChunks{ContentId: p.lay.files[k].ID.String()}
			req.Files = append(req.Files, cur)
			files = append(files, k)
		}
		cur.Indexes = append(cur.Indexes, uint32(i))
	}
	return req, files
}
