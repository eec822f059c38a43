package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Registry finds a file through a shoal registry and fetches it from gRPC
// peers. It satisfies Discoverer.
type Registry struct {
	// Target is the file: a content id, or a name the registry knows.
	Target string
	// Conn reaches the registry.
	Conn grpc.ClientConnInterface
	// DialOptions reach the peers; nil means DialOptions().
	DialOptions []grpc.DialOption
	// CallTimeout bounds each registry call and each manifest fetch.
	// Default 10 s.
	CallTimeout time.Duration
	// Ahead is how many holders Manifest connects to while it fetches the
	// manifest (from manifestHedge of them), for the first Discover to hand
	// out: a far peer's connection costs a round trip, which this overlaps
	// with the manifest's, and the manifest's own connections are kept.
	// A download's Run closes those no Discover took; otherwise call Close.
	// 0: none, the manifest's connections close once it is fetched.
	Ahead int

	mu     sync.Mutex
	warm   []*warmPeer          // connected by Manifest, not yet handed out; guarded by mu
	m      *chunkstore.Manifest // set by Manifest; guarded by mu
	lay    *layout              // set by Manifest or Folder; guarded by mu
	folder *Folder              // set by Folder; guarded by mu
}

// Manifest phase limits: holders asked at once, and holders asked in all
// before the phase gives up. A holder that refuses costs a millisecond and
// a silent one CallTimeout, three at a time, so even a registry full of
// junk entries costs the phase seconds, not minutes.
const (
	manifestHedge = 3
	manifestTries = 256
)

func (r *Registry) callTimeout() time.Duration {
	if r.CallTimeout > 0 {
		return r.CallTimeout
	}
	return 10 * time.Second
}

// lookup asks the registry for the file named by req's File and up to
// limit peers.
func (r *Registry) lookup(ctx context.Context, file string, exclude []string, limit int) (*shoalv1.LookupResponse, error) {
	req := &shoalv1.LookupRequest{Limit: uint32(limit), Exclude: exclude}
	if isID(file) {
		req.File = &shoalv1.LookupRequest_ContentId{ContentId: file}
	} else {
		req.File = &shoalv1.LookupRequest_Name{Name: file}
	}
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	resp, err := shoalv1.NewRegistryServiceClient(r.Conn).Lookup(ctx, req)
	if err != nil {
		return nil, callError(ctx, "registry", "registry lookup", err, r.callTimeout())
	}
	return resp, nil
}

// isID reports whether s is a content id or a tree id, not a name.
func isID(s string) bool {
	if _, err := chunkstore.ParseID(s); err == nil {
		return true
	}
	_, err := chunkstore.ParseTreeID(s)
	return err == nil
}

// target is what lookups ask for: the content or tree id once known, else
// Target.
func (r *Registry) target() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lay != nil {
		return r.lay.id
	}
	return r.Target
}

// Manifest looks the file up and fetches its manifest from its holders,
// accepting the first that hashes to the content id (see fromHolders).
// The manifest is kept: later calls return it without asking again.
func (r *Registry) Manifest(ctx context.Context) (*chunkstore.Manifest, error) {
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	if m != nil {
		return m, nil
	}
	resp, err := r.lookup(ctx, r.Target, nil, max(manifestHedge, r.Ahead))
	if err != nil {
		return nil, err
	}
	id, err := chunkstore.ParseID(resp.GetFile().GetContentId())
	if err != nil {
		if _, terr := chunkstore.ParseTreeID(resp.GetFile().GetContentId()); terr == nil {
			return nil, fmt.Errorf("%s: %w", chunkstore.Clip(r.Target), ErrIsFolder)
		}
		return nil, fmt.Errorf("registry answered a bad content id: %w", err)
	}
	// A manifest message may be as large as the file's size implies, not
	// only one chunk: 3.5 MB for 100 GiB.
	limit := max(maxMessageBytes, chunkstore.WireBytes(int64(resp.GetFile().GetSize())))
	r.warmUp(resp.GetFile(), resp.GetPeers())
	first := &shoalv1.LookupResponse{File: resp.GetFile(), Peers: resp.GetPeers()[:min(len(resp.GetPeers()), manifestHedge)]}
	m, err = fromHolders(ctx, r, first, "manifest", func(ctx context.Context, addr string) (*chunkstore.Manifest, error) {
		m, err := r.fetchManifest(ctx, addr, id, limit)
		if err != nil && ctx.Err() == nil { // not cancelled because another answered
			r.dropWarm(addr) // refused, unreachable or lying: not one to download from first
		}
		return m, err
	})
	if err != nil {
		r.closeWarm()
		// A holder that found its file edited since it announced it (a
		// first request reading it, say) no longer serves the old id.
		if changed := r.renamedFrom(ctx, id); changed != nil {
			return nil, changed
		}
		return nil, err
	}
	r.mu.Lock()
	r.m, r.lay = m, fileLayout(m)
	for _, w := range r.warm {
		for _, e := range w.early {
			if !e.fits(m) {
				e.drop()
			}
		}
	}
	r.mu.Unlock()
	return m, nil
}

// fromHolders asks the holders of the file or folder that resp found for
// what (a manifest, say) with fetch, and returns the first answer. It asks
// manifestHedge holders at once, each within CallTimeout, and draws more
// from the registry while those fail, so junk or silent holders cost one
// timeout at most, not one each.
func fromHolders[T any](ctx context.Context, r *Registry, resp *shoalv1.LookupResponse, what string, fetch func(ctx context.Context, addr string) (T, error)) (T, error) {
	id := resp.GetFile().GetContentId()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		v   T
		err error
	}
	answers := make(chan answer)
	var (
		wg      sync.WaitGroup
		asked   []string
		pending int
		errs    []error
		zero    T
	)
	defer wg.Wait()
	defer cancel()
	ask := func(peers []*shoalv1.PeerInfo) {
		for _, p := range peers {
			if len(asked) >= manifestTries {
				return
			}
			asked = append(asked, p.GetPeerId())
			pending++
			addr := p.GetAddress()
			wg.Go(func() {
				v, err := fetch(ctx, addr)
				select {
				case answers <- answer{v, err}:
				case <-ctx.Done():
				}
			})
		}
	}
	ask(resp.GetPeers())
	for pending > 0 {
		var a answer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		pending--
		if a.err == nil {
			return a.v, nil
		}
		errs = append(errs, a.err)
		if pending < manifestHedge && len(asked) < manifestTries {
			if more, err := r.lookup(ctx, id, asked, manifestHedge-pending); err == nil {
				ask(more.GetPeers())
			}
		}
	}
	if len(errs) == 0 {
		return zero, fmt.Errorf("%s: %w", id, ErrNoPeers)
	}
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Errorf("and %d more", len(errs)-3))
	}
	return zero, fmt.Errorf("%w: none of %d holders gave a valid %s for %s: %w", ErrNoPeers, len(asked), what, id, errors.Join(errs...))
}

func (r *Registry) dialOptions() []grpc.DialOption {
	if r.DialOptions != nil {
		return r.DialOptions
	}
	return DialOptions()
}

func (r *Registry) fetchManifest(ctx context.Context, addr string, id chunkstore.ID, limit int) (*chunkstore.Manifest, error) {
	cc := r.warmConn(addr)
	if cc == nil {
		c, err := grpc.NewClient(addr, r.dialOptions()...)
		if err != nil {
			return nil, fmt.Errorf("manifest from %s: %w: %w", addr, ErrUnreachable, err)
		}
		defer c.Close()
		cc = c
	}
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	resp, err := shoalv1.NewPeerServiceClient(cc).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_ContentId{ContentId: id.String()}},
		grpc.MaxCallRecvMsgSize(limit))
	if err != nil {
		return nil, callError(ctx, "peer", "manifest from "+addr, err, r.callTimeout())
	}
	m, err := ManifestFromWire(resp.GetManifest())
	if err != nil {
		return nil, fmt.Errorf("manifest from %s: %w: %w", addr, ErrProtocol, err)
	}
	if err := m.Verify(id); err != nil {
		return nil, fmt.Errorf("manifest from %s: %w: %w", addr, ErrProtocol, err)
	}
	return m, nil
}

// Discover returns up to limit holders not in exclude. When the registry
// no longer knows the content id and Target is a name that now names
// other contents, it fails with a NameChangedError.
//
// The first call hands out the holders Manifest connected to, and looks up
// only the rest.
func (r *Registry) Discover(ctx context.Context, exclude []string, limit int) ([]Source, error) {
	r.mu.Lock()
	lay, warm := r.lay, r.warm
	r.warm = nil
	r.mu.Unlock()
	var out []Source
	for _, w := range warm {
		if len(out) == limit || slices.Contains(exclude, w.info.GetPeerId()) {
			w.close()
			continue
		}
		out = append(out, r.peer(w.info, w.cc, lay, w))
		exclude = append(slices.Clip(exclude), w.info.GetPeerId())
	}
	if len(out) == limit {
		return out, nil
	}
	resp, err := r.lookup(ctx, r.target(), exclude, limit-len(out))
	if errors.Is(err, ErrNotFound) {
		if changed := r.renamed(ctx); changed != nil {
			closeAll(out)
			return nil, changed
		}
	}
	if err != nil {
		if len(out) > 0 {
			return out, nil // these are enough to start with
		}
		return nil, err
	}
	for _, p := range resp.GetPeers() {
		cc, err := grpc.NewClient(p.GetAddress(), r.dialOptions()...)
		if err != nil {
			continue
		}
		// Timed from here, alongside its first requests: before data
		// flows, as the warm ones were.
		w := r.newWarm(p, cc)
		go w.timeConnect()
		out = append(out, r.peer(p, cc, lay, w))
	}
	return out, nil
}

// peer is a Source for the holder p over cc, which w times and may
// widen ahead (see warmPeer.timeConnect).
func (r *Registry) peer(p *shoalv1.PeerInfo, cc *grpc.ClientConn, lay *layout, w *warmPeer) *Peer {
	partial := false
	for _, f := range p.GetFiles() {
		partial = partial || f.GetPartial()
	}
	return &Peer{id: p.GetPeerId(), addr: p.GetAddress(), cc: cc, lay: lay, partial: partial, opts: r.dialOptions(),
		connected: &w.ready, spare: &w.spare, earlyReqs: w.early, clientID: w.clientID}
}

func closeAll(srcs []Source) {
	for _, s := range srcs {
		s.Close()
	}
}

// warmPeer is a holder connected to while the manifest is fetched, or
// alongside its first requests.
type warmPeer struct {
	info     *shoalv1.PeerInfo
	cc       *grpc.ClientConn
	opts     []grpc.DialOption // how cc was dialed
	window   int32             // the wide window a far peer gets (see windowFor)
	clientID string            // the Peer's (see Peer.asClient)
	ready    atomic.Int64      // time from dial to a ready connection, in ns; 0 until then
	spare    spareConn         // a wide connection, dialed once cc is found far
	file     string            // the content id early asks for
	early    []*earlyReq       // sent once cc is ready
}

// newWarm is a warmPeer for the holder p over cc.
func (r *Registry) newWarm(p *shoalv1.PeerInfo, cc *grpc.ClientConn) *warmPeer {
	return &warmPeer{info: p, cc: cc, opts: r.dialOptions(), window: windowFor(max(1, r.Ahead)), clientID: newClientID()}
}

// close closes w's connections; a Peer made of w closes them instead.
func (w *warmPeer) close() {
	for _, e := range w.early {
		e.drop()
	}
	w.spare.close()
	w.cc.Close()
}

// warmUp starts connecting to holders of file, up to Ahead of them (at
// least manifestHedge, none if Ahead is 0): the first Discover hands them
// out. The Ahead first are sent their first requests as soon as they are
// connected (see earlyReq).
func (r *Registry) warmUp(file *shoalv1.FileInfo, holders []*shoalv1.PeerInfo) {
	if r.Ahead <= 0 {
		return
	}
	holders = holders[:min(len(holders), max(manifestHedge, r.Ahead))]
	plan := earlyPlan(file, holders[:min(len(holders), r.Ahead)])
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range holders {
		cc, err := grpc.NewClient(p.GetAddress(), r.dialOptions()...)
		if err != nil {
			continue
		}
		w := r.newWarm(p, cc)
		if k < len(plan) {
			w.file, w.early = file.GetContentId(), plan[k]
		}
		r.warm = append(r.warm, w)
		go w.timeConnect()
	}
}

// timeConnect connects w and records how long that took; it gives up
// after connectTimeout, or when w is closed. A connect slower than
// widenAfter marks a far peer, which Download.probe widens as soon as its
// first request goes: its wide connection is dialed now, beside the
// manifest's round trip, rather than after it.
func (w *warmPeer) timeConnect() {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	t0 := time.Now()
	w.cc.Connect()
	for s := w.cc.GetState(); s != connectivity.Ready; s = w.cc.GetState() {
		if s == connectivity.Shutdown || !w.cc.WaitForStateChange(ctx, s) {
			return
		}
	}
	w.connected(max(1, time.Since(t0)))
}

// connected records that w's connection came up in took: its early
// requests go, and a far peer's wide connection is dialed.
func (w *warmPeer) connected(took time.Duration) {
	for _, e := range w.early {
		e.send(w.cc, w.file, w.clientID)
	}
	if took > widenAfter {
		w.spare.dial(w.info.GetAddress(), w.opts, w.window)
	}
	w.ready.Store(int64(took))
}

// warmConn is the warm connection to addr, nil if none.
func (r *Registry) warmConn(addr string) *grpc.ClientConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.warm {
		if w.info.GetAddress() == addr {
			return w.cc
		}
	}
	return nil
}

// dropWarm closes the warm connection to addr, if any.
func (r *Registry) dropWarm(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.warm = slices.DeleteFunc(r.warm, func(w *warmPeer) bool {
		if w.info.GetAddress() == addr {
			w.cc.Close()
			return true
		}
		return false
	})
}

// Close closes the connections Manifest made ahead (see Ahead) that no
// Discover took: call it when a Manifest is not followed by a download's
// Run, which closes them itself. The Registry stays usable.
func (r *Registry) Close() { r.closeWarm() }

// closeWarm closes the warm connections not handed out: a download that
// needs no peer (the file was complete) or failed before Discover.
func (r *Registry) closeWarm() {
	r.mu.Lock()
	warm := r.warm
	r.warm = nil
	r.mu.Unlock()
	for _, w := range warm {
		w.close()
	}
}

// renamed checks whether Target, a name, now names another content id.
func (r *Registry) renamed(ctx context.Context) error {
	r.mu.Lock()
	m := r.m
	r.mu.Unlock()
	if m == nil {
		return nil // a folder's name changing is not followed
	}
	return r.renamedFrom(ctx, m.ID)
}

// renamedFrom checks whether Target, a name, now names another content
// id than old.
func (r *Registry) renamedFrom(ctx context.Context, old chunkstore.ID) error {
	if isID(r.Target) {
		return nil // asked by id: an id never changes
	}
	resp, err := r.lookup(ctx, r.Target, nil, 1) // the file is what is asked; one holder is the least a lookup returns
	if err != nil {
		return nil
	}
	now, err := chunkstore.ParseID(resp.GetFile().GetContentId())
	if err != nil || now == old {
		return nil
	}
	return &NameChangedError{Name: r.Target, Old: old, New: now}
}

// ListedFile is one file or folder the registry knows, with its holder
// counts.
type ListedFile struct {
	Name           string // a folder's ends in '/'
	ID             string // content id or tree id, text form
	Size           int64  // a folder's: its files' total
	Folder         bool
	Files          int // a folder's file count
	Holders        int // live peers holding all of it
	PartialHolders int // live peers holding part of it
}

// ListFiles lists every file and folder a registry knows whose name starts
// with prefix, following its pages; each page is one call within timeout.
func ListFiles(ctx context.Context, conn grpc.ClientConnInterface, prefix string, timeout time.Duration) ([]ListedFile, error) {
	var (
		out []ListedFile
		tok string
	)
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		resp, err := shoalv1.NewRegistryServiceClient(conn).ListFiles(cctx, &shoalv1.ListFilesRequest{PageToken: tok, Prefix: prefix}, grpc.WaitForReady(false))
		if err != nil {
			err = callError(cctx, "registry", "list files", err, timeout)
			cancel()
			return nil, err
		}
		cancel()
		for _, f := range resp.GetFiles() {
			_, terr := chunkstore.ParseTreeID(f.GetFile().GetContentId())
			out = append(out, ListedFile{
				Name: f.GetFile().GetName(), ID: f.GetFile().GetContentId(), Size: int64(f.GetFile().GetSize()),
				Folder: terr == nil, Files: int(f.GetFile().GetFileCount()),
				Holders: int(f.GetHolders()), PartialHolders: int(f.GetPartialHolders()),
			})
		}
		tok = resp.GetNextPageToken()
		if tok == "" || len(resp.GetFiles()) == 0 {
			return out, nil
		}
	}
}
