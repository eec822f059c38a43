package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// ChunkReader reads the chunks of one open file.
type ChunkReader interface {
	// Manifest is the manifest the chunks match.
	Manifest() *chunkstore.Manifest
	// ReadChunk reads chunk i into buf (ChunkSize bytes) and returns the
	// filled part; it fails with chunkstore.ErrChunkNotHeld for a chunk
	// a partial holder does not hold yet, and chunkstore.ErrNotFound when
	// the peer no longer holds the file.
	ReadChunk(i int, buf []byte) ([]byte, error)
	// Close releases the file.
	Close() error
}

// Files is what a PeerService serves.
type Files interface {
	// Manifest returns the manifest of the file with content id id.
	Manifest(id chunkstore.ID) (*chunkstore.Manifest, error)
	// ManifestByName returns the manifest of the file at name.
	ManifestByName(name string) (*chunkstore.Manifest, error)
	// OpenChunks opens a file for chunk reads.
	OpenChunks(id chunkstore.ID) (ChunkReader, error)
	// WatchHave calls fn with the chunks of id held now, then with each
	// chunk added, until ctx ends or the file is complete.
	WatchHave(ctx context.Context, id chunkstore.ID, fn func(have []bool, added []int, complete bool) error) error
}

// PeerConfig holds the PeerService's limits.
type PeerConfig struct {
	// MaxChunksPerRequest caps the chunks one GetChunks may ask for; more
	// is ResourceExhausted. It bounds a stream's work, not its speed.
	// Default 4096.
	MaxChunksPerRequest int
	// PieceSize is the most chunk bytes per GetChunksResponse, in bytes.
	// Default 1 MiB: chunks are at most that, so one message per chunk.
	PieceSize int
	// Throttle limits the peer's uploads, all streams together; nil is
	// unlimited.
	Throttle *Throttle
	// MaxUploads caps GetChunks calls served at once by this peer, over all
	// clients; more is ResourceExhausted (reason BUSY: clients back off).
	// Default 256; negative: no limit.
	MaxUploads int
	// MaxUploadsPerClient caps the GetChunks calls served at once to one
	// client IP, so one client cannot hold every upload. Default 32 (a
	// download asks 2 at a time per peer); negative: no limit.
	MaxUploadsPerClient int
	// MaxUploadsPerConn caps them on one connection. Default 8; negative:
	// no limit.
	MaxUploadsPerConn int
	// MaxWatchers caps the WatchHave streams open at once, over all
	// clients; each holds a goroutine and a have-set. Default 4096;
	// negative: no limit.
	MaxWatchers int
	// MaxWatchersPerClient caps them per client IP. Default 64 (a
	// downloader opens one per partial holder it uses); negative: no limit.
	MaxWatchersPerClient int
	// SendTimeout ends a GetChunks call whose client takes no message for
	// this long (it stopped reading), giving its slot to others at once.
	// Default 20 s, the clients' stall timeout.
	SendTimeout time.Duration
	// SuperSeed reveals chunks to each client through WatchHave a few at
	// a time, each to one client, until all went out once (see superSeed).
	// For a seeder whose upload is a swarm's bottleneck; it should then
	// announce its files as partial so clients ask WatchHave.
	SuperSeed bool
}

// DefaultPeerConfig returns the limits used by `shoal serve`.
func DefaultPeerConfig() PeerConfig {
	return PeerConfig{
		MaxChunksPerRequest: 4096, PieceSize: chunkstore.MaxChunkSize,
		MaxUploads: 256, MaxUploadsPerClient: 32, MaxUploadsPerConn: 8, SendTimeout: 20 * time.Second,
		MaxWatchers: 4096, MaxWatchersPerClient: 64,
	}
}

// PeerService implements shoal.v1.PeerService over a Files source.
type PeerService struct {
	shoalv1.UnimplementedPeerServiceServer
	files    Files
	cfg      PeerConfig
	bufs     chunkPool
	stats    *Stats
	seed     *superSeed        // nil unless cfg.SuperSeed
	slots    *uploadSlots      // the uploads under way, per client and connection
	cut      func(addr string) // closes a client's connection; nil outside a Server
	watchers *uploadSlots      // the WatchHave streams open, per client
}

// NewPeerService serves files with the limits in cfg.
func NewPeerService(files Files, cfg PeerConfig, stats *Stats) *PeerService {
	if cfg.MaxChunksPerRequest <= 0 {
		cfg.MaxChunksPerRequest = DefaultPeerConfig().MaxChunksPerRequest
	}
	if cfg.PieceSize <= 0 || cfg.PieceSize > chunkstore.MaxChunkSize {
		cfg.PieceSize = chunkstore.MaxChunkSize
	}
	if stats == nil {
		stats = &Stats{}
	}
	p := &PeerService{files: files, cfg: cfg, stats: stats}
	if cfg.SuperSeed {
		p.seed = newSuperSeed(2)
	}
	def := DefaultPeerConfig()
	if cfg.MaxUploads == 0 {
		cfg.MaxUploads = def.MaxUploads
	}
	if cfg.MaxUploadsPerClient == 0 {
		cfg.MaxUploadsPerClient = def.MaxUploadsPerClient
	}
	if cfg.MaxUploadsPerConn == 0 {
		cfg.MaxUploadsPerConn = def.MaxUploadsPerConn
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = def.SendTimeout
	}
	if cfg.MaxWatchers == 0 {
		cfg.MaxWatchers = def.MaxWatchers
	}
	if cfg.MaxWatchersPerClient == 0 {
		cfg.MaxWatchersPerClient = def.MaxWatchersPerClient
	}
	p.watchers = newUploadSlots(cfg.MaxWatchers, cfg.MaxWatchersPerClient, -1)
	p.cfg = cfg
	p.slots = newUploadSlots(cfg.MaxUploads, cfg.MaxUploadsPerClient, cfg.MaxUploadsPerConn)
	return p
}

// GetManifest returns a manifest by content id or name.
func (p *PeerService) GetManifest(_ context.Context, req *shoalv1.GetManifestRequest) (*shoalv1.GetManifestResponse, error) {
	var (
		m   *chunkstore.Manifest
		err error
	)
	switch f := req.GetFile().(type) {
	case *shoalv1.GetManifestRequest_ContentId:
		var id chunkstore.ID
		if id, err = chunkstore.ParseID(f.ContentId); err == nil {
			m, err = p.files.Manifest(id)
		}
	case *shoalv1.GetManifestRequest_Name:
		if f.Name == "" {
			err = fmt.Errorf("%w: empty name", errInvalid)
		} else {
			m, err = p.files.ManifestByName(f.Name)
		}
	default:
		err = fmt.Errorf("%w: name a file by content_id or name", errInvalid)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &shoalv1.GetManifestResponse{Manifest: ManifestToWire(m)}, nil
}

// GetChunks streams the chunks asked for, in order: of one file, or of
// several (files), each file's reader opened only while its chunks go out.
func (p *PeerService) GetChunks(req *shoalv1.GetChunksRequest, stream grpc.ServerStreamingServer[shoalv1.GetChunksResponse]) error {
	ctx := stream.Context()
	addr, ip := clientAddr(ctx), clientIP(ctx)
	release, err := p.slots.acquire(ip, addr)
	if err != nil {
		return toStatus(err)
	}
	defer release()
	files, err := p.requested(req)
	if err != nil {
		return toStatus(err)
	}
	// A client that stops reading loses its slot after SendTimeout, and
	// the call ends once its send returns.
	// Its connection is cut too: grpc-go cannot end one stream stuck in a
	// send, and a client that reads nothing on one stream holds the others.
	send := newGuardedStream(stream, p.cfg.SendTimeout, func() {
		release()
		if p.cut != nil {
			p.cut(addr)
		}
	})
	defer send.timer.Stop()
	client := seedClientKey(ctx)
	for k, f := range files {
		if err := p.sendFile(send, uint32(k), f, client); err != nil {
			return err
		}
		if k == 0 {
			p.stats.served(ip)
		}
	}
	return nil
}

// fileChunks is one file's part of a GetChunks call.
type fileChunks struct {
	id     chunkstore.ID
	chunks []int
}

// requested checks a GetChunks request: every file held, every chunk in
// range, and the chunks of all files together within MaxChunksPerRequest.
func (p *PeerService) requested(req *shoalv1.GetChunksRequest) ([]fileChunks, error) {
	limit := p.cfg.MaxChunksPerRequest
	if len(req.GetFiles()) == 0 {
		id, err := chunkstore.ParseID(req.GetContentId())
		if err != nil {
			return nil, err
		}
		m, err := p.files.Manifest(id)
		if err != nil {
			return nil, err
		}
		want, err := chunkList(req, m.NumChunks(), limit)
		if err != nil {
			return nil, err
		}
		return []fileChunks{{id, want}}, nil
	}
	if req.GetContentId() != "" || len(req.GetIndexes()) > 0 || len(req.GetRanges()) > 0 {
		return nil, fmt.Errorf("%w: a request naming files has no content_id, indexes or ranges of its own", errInvalid)
	}
	total := 0
	for _, f := range req.GetFiles() {
		total += len(f.GetIndexes())
	}
	if total > limit || len(req.GetFiles()) > limit {
		return nil, fmt.Errorf("%w: more than %d chunks in one request", errTooLarge, limit)
	}
	out := make([]fileChunks, 0, len(req.GetFiles()))
	for k, f := range req.GetFiles() {
		id, err := chunkstore.ParseID(f.GetContentId())
		if err != nil {
			return nil, fmt.Errorf("file %d: %w", k, err)
		}
		m, err := p.files.Manifest(id)
		if err != nil {
			return nil, err
		}
		if len(f.GetIndexes()) == 0 {
			return nil, fmt.Errorf("%w: file %d: no chunks asked for", errInvalid, k)
		}
		want := make([]int, len(f.GetIndexes()))
		for j, i := range f.GetIndexes() {
			if int(i) >= m.NumChunks() {
				return nil, fmt.Errorf("file %d: chunk %d of a %d-chunk file: %w", k, i, m.NumChunks(), chunkstore.ErrOutOfRange)
			}
			want[j] = int(i)
		}
		out = append(out, fileChunks{id, want})
	}
	return out, nil
}

// sendFile sends the chunks of f, the file at position file of the
// request; client names the client to a super-seeder (seedClientKey).
func (p *PeerService) sendFile(send *guardedStream, file uint32, f fileChunks, client string) error {
	r, err := p.files.OpenChunks(f.id)
	if err != nil {
		return toStatus(err)
	}
	defer r.Close()
	m := r.Manifest()
	pool := &p.bufs
	for _, i := range f.chunks {
		if i >= m.NumChunks() { // the file changed since the request was checked
			return toStatus(fmt.Errorf("chunk %d of a %d-chunk file: %w", i, m.NumChunks(), chunkstore.ErrOutOfRange))
		}
		off, n := m.ChunkBounds(i)
		bp := pool.Get(n)
		data, err := r.ReadChunk(i, *bp)
		if err != nil {
			pool.Put(bp)
			return toStatus(err)
		}
		err = p.sendChunk(send, chunkPiece{index: uint32(i), file: file, offset: uint64(off), data: mem.NewBuffer(bp, pool)}, data)
		if send.stall.Load() {
			return toStatus(fmt.Errorf("%w: the client read nothing for %v", errBusy, p.cfg.SendTimeout))
		}
		if err != nil {
			return err
		}
		p.stats.ChunksServed.Add(1)
		if p.seed != nil {
			p.seed.sent(f.id, client, i)
		}
	}
	return nil
}

// sendChunk sends the chunk c holds in c.data (its bytes are data), in
// PieceSize pieces, and gives up c.data. A whole chunk goes out without a
// copy: the transport frees the buffer once it is written. Split chunks
// copy each piece, since a reference to part of a buffer cannot be handed
// out.
func (p *PeerService) sendChunk(stream grpc.ServerStream, c chunkPiece, data []byte) error {
	ctx := stream.Context()
	buf := c.data
	if len(data) <= p.cfg.PieceSize {
		if err := p.cfg.Throttle.Wait(ctx, len(data)); err != nil {
			buf.Free()
			return toStatus(err)
		}
		if err := stream.SendMsg(&c); err != nil {
			return err
		}
		p.stats.BytesServed.Add(int64(len(data)))
		return nil
	}
	defer buf.Free()
	for sent := 0; sent < len(data); {
		k := min(len(data)-sent, p.cfg.PieceSize)
		if err := p.cfg.Throttle.Wait(ctx, k); err != nil {
			return toStatus(err)
		}
		piece := chunkPiece{index: c.index, file: c.file, offset: c.offset + uint64(sent), data: mem.Copy(data[sent:sent+k], mem.DefaultBufferPool())}
		if err := stream.SendMsg(&piece); err != nil {
			return err
		}
		p.stats.BytesServed.Add(int64(k))
		sent += k
	}
	return nil
}

// chunkList expands a request's indexes and ranges into chunk indexes,
// checking every one against n chunks and the total against limit.
func chunkList(req *shoalv1.GetChunksRequest, n, limit int) ([]int, error) {
	total := len(req.GetIndexes())
	for _, r := range req.GetRanges() {
		if r.GetEnd() <= r.GetStart() {
			return nil, fmt.Errorf("%w: empty or reversed range [%d, %d)", errInvalid, r.GetStart(), r.GetEnd())
		}
		total += int(r.GetEnd() - r.GetStart())
		if total > limit {
			break
		}
	}
	switch {
	case total == 0:
		return nil, fmt.Errorf("%w: no chunks asked for", errInvalid)
	case total > limit:
		return nil, fmt.Errorf("%w: more than %d chunks in one request", errTooLarge, limit)
	}
	out := make([]int, 0, total)
	for _, i := range req.GetIndexes() {
		out = append(out, int(i))
	}
	for _, r := range req.GetRanges() {
		for i := r.GetStart(); i < r.GetEnd(); i++ {
			out = append(out, int(i))
		}
	}
	for _, i := range out {
		if i >= n {
			return nil, fmt.Errorf("chunk %d of a %d-chunk file: %w", i, n, chunkstore.ErrOutOfRange)
		}
	}
	return out, nil
}

// WatchHave streams the peer's chunk set for one file.
func (p *PeerService) WatchHave(req *shoalv1.WatchHaveRequest, stream grpc.ServerStreamingServer[shoalv1.WatchHaveResponse]) error {
	ctx := stream.Context()
	release, err := p.watchers.acquire(clientIP(ctx), clientAddr(ctx))
	if err != nil {
		return toStatus(err)
	}
	defer release()
	// A folder's tree id asks for the chunks of all its files, laid end to
	// end (a downloader serving a folder it is fetching).
	id, tree, err := parseAnyID(req.GetContentId())
	if err != nil {
		return toStatus(err)
	}
	if p.seed != nil && !tree {
		return p.superSeedHave(id, stream)
	}
	first := true
	err = p.files.WatchHave(stream.Context(), id, func(have []bool, added []int, complete bool) error {
		resp := &shoalv1.WatchHaveResponse{ChunkCount: uint32(len(have)), Complete: complete}
		if first {
			resp.Bitmap = chunkstore.PackHave(have)
			first = false
		}
		for _, i := range added {
			resp.Added = append(resp.Added, uint32(i))
		}
		return stream.Send(resp)
	})
	if err != nil {
		return toStatus(err)
	}
	<-stream.Context().Done() // a complete holder stays a holder
	return nil
}

// superSeedHave feeds a client the chunks revealed to it.
func (p *PeerService) superSeedHave(id chunkstore.ID, stream grpc.ServerStreamingServer[shoalv1.WatchHaveResponse]) error {
	m, err := p.files.Manifest(id)
	if err != nil {
		return toStatus(err)
	}
	ctx := stream.Context()
	client := seedClientKey(ctx)
	have, c := p.seed.subscribe(id, m.NumChunks(), client)
	defer p.seed.unsubscribe(id, client, c)
	if err := stream.Send(&shoalv1.WatchHaveResponse{ChunkCount: uint32(len(have)), Bitmap: chunkstore.PackHave(have)}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case added := <-c.wake:
			resp := &shoalv1.WatchHaveResponse{ChunkCount: uint32(len(have))}
			for _, i := range added {
				resp.Added = append(resp.Added, uint32(i))
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// ManifestToWire converts a manifest to its wire form; the client's
// ManifestFromWire is its inverse.
func ManifestToWire(m *chunkstore.Manifest) *shoalv1.Manifest {
	return &shoalv1.Manifest{
		Name:        m.Name,
		Size:        uint64(m.Size),
		ChunkSize:   uint32(m.ChunkSize),
		ContentId:   m.ID.String(),
		ChunkHashes: m.HashBytes(),
	}
}

// guardedStream calls stalled when one SendMsg waits longer than timeout:
// the client stopped reading and its flow-control window is full. Waits
// of the upload throttle are not counted.
type guardedStream struct {
	grpc.ServerStream
	timeout time.Duration
	timer   *time.Timer // calls stalled; armed only while a send waits
	stall   atomic.Bool // a send outlasted timeout
}

// newGuardedStream guards ss's sends; stop its timer when the call ends.
func newGuardedStream(ss grpc.ServerStream, timeout time.Duration, stalled func()) *guardedStream {
	g := &guardedStream{ServerStream: ss, timeout: timeout}
	g.timer = time.AfterFunc(timeout, func() {
		g.stall.Store(true)
		stalled()
	})
	g.timer.Stop()
	return g
}

func (g *guardedStream) SendMsg(m any) error {
	g.timer.Reset(g.timeout)
	defer g.timer.Stop()
	return g.ServerStream.SendMsg(m)
}
