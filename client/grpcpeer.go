package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// maxMessageBytes is the largest message a peer may send: a full chunk and
// its envelope. It matches the server's limit.
const maxMessageBytes = chunkstore.MaxChunkSize + 64<<10

// windowBudget is the HTTP/2 flow-control window that the peers of one
// download share: what they may send ahead of the client, and so the most
// it buffers when it reads slower than they send. A peer's window is its
// share, at least minWindow: on loopback or a LAN two whole chunks in
// flight keep a peer busy, while a link with a round trip of 100 ms needs
// its rate times 100 ms (a 2 MiB window held one peer to 20 MB/s there).
const (
	windowBudget = 64 << 20
	minWindow    = 4 << 20
)

// windowFor is the connection window of each of peers peers; each stream
// may take all of it.
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

// TuningOptions are TuningOptionsFor the default 5 peers.
func TuningOptions() []grpc.DialOption { return TuningOptionsFor(0) }

// TuningOptionsFor are flow-control windows for a download from peers
// peers at once (0: the default 5) and the message limit; add them to dial
// options that carry credentials. The windows are static: grpc-go's
// estimate of the bandwidth-delay product, which a static window turns
// off, stops at 16 MiB and starts at 64 KiB.
func TuningOptionsFor(peers int) []grpc.DialOption {
	if peers <= 0 {
		peers = 5
	}
	w := windowFor(peers)
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(w),
		grpc.WithInitialConnWindowSize(w),
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
	cc       *grpc.ClientConn
	lay      *layout
	partial  bool // registered as holding part of the file or tree
}

// Partial reports whether the peer registered as a partial holder.
func (p *Peer) Partial() bool { return p.partial }

// WatchHave follows the peer's WatchHave stream.
func (p *Peer) WatchHave(ctx context.Context, fn func(have []bool, added []int)) error {
	stream, err := shoalv1.NewPeerServiceClient(p.cc).WatchHave(ctx, &shoalv1.WatchHaveRequest{ContentId: p.lay.id})
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
	return &Peer{id: id, addr: addr, cc: cc, lay: fileLayout(m)}
}

// ID is the peer's registry id.
func (p *Peer) ID() string { return p.id }

// Addr is the peer's address.
func (p *Peer) Addr() string { return p.addr }

// Close closes the connection.
func (p *Peer) Close() error { return p.cc.Close() }

// Fetch streams the chunks with one GetChunks call, reassembling chunks
// that span several messages, and refuses anything it did not ask for.
// Chunks of several files of a tree go in one call, each file named once
// per run of its chunks. Chunk bytes are handed to got in the buffers
// gRPC read them into.
func (p *Peer) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	req, files := p.request(chunks)
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

// request is the GetChunks request for chunks, and the layout file of
// each position of its files (one position for a single file).
func (p *Peer) request(chunks []int) (*shoalv1.GetChunksRequest, []int) {
	if len(p.lay.files) == 1 {
		req := &shoalv1.GetChunksRequest{ContentId: p.lay.files[0].ID.String(), Indexes: make([]uint32, len(chunks))}
		for k, i := range chunks {
			req.Indexes[k] = uint32(i)
		}
		return req, []int{0}
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
