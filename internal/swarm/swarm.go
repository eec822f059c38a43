// Package swarm makes a download a peer: while it fetches a file it serves
// the chunks it has verified, announces itself to the registry as a partial
// holder, and goes on seeding once it is complete. It glues client (the
// download) to server (the node), which do not import each other.
package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/server"
)

// Files serves a download's verified chunks: of its file, or of every
// file of its folder, and the folder's tree. It satisfies server.Files
// and server.Trees.
type Files struct {
	D    *client.Download
	Name string // the folder's name on the network ("photos/"); a file's is its manifest's
}

// Manifest returns the manifest of the download's file, or of one of its
// folder's files.
func (f Files) Manifest(id chunkstore.ID) (*chunkstore.Manifest, error) {
	if m, _, ok := f.D.File(id); ok {
		return m, nil
	}
	return nil, fmt.Errorf("%s: %w", id, chunkstore.ErrNotFound)
}

// ManifestByName returns the download's manifest for its name.
func (f Files) ManifestByName(name string) (*chunkstore.Manifest, error) {
	if m := f.D.Manifest(); m != nil && m.Name == name {
		return m, nil
	}
	return nil, fmt.Errorf("%q: %w", name, chunkstore.ErrNotFound)
}

// OpenChunks opens a file of the download for reads of verified chunks.
func (f Files) OpenChunks(id chunkstore.ID) (server.ChunkReader, error) {
	m, first, ok := f.D.File(id)
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, chunkstore.ErrNotFound)
	}
	return reader{f.D, m, first}, nil
}

// WatchHave follows the verified chunks of one file of the download, or
// of all of them when id is the folder's tree id.
func (f Files) WatchHave(ctx context.Context, id chunkstore.ID, fn func([]bool, []int, bool) error) error {
	if t := f.D.Tree(); t != nil && chunkstore.TreeID(id) == t.ID {
		return f.D.WatchHave(ctx, fn)
	}
	m, first, ok := f.D.File(id)
	if !ok {
		return fmt.Errorf("%s: %w", id, chunkstore.ErrNotFound)
	}
	n := m.NumChunks()
	return f.D.WatchHave(ctx, func(have []bool, added []int, complete bool) error {
		var mine []int
		for _, g := range added {
			if g >= first && g < first+n {
				mine = append(mine, g-first)
			}
		}
		if len(added) > 0 && len(mine) == 0 && !complete {
			return nil
		}
		return fn(have[first:first+n], mine, complete)
	})
}

// Tree serves the folder's tree by path: only the folder itself ("").
func (f Files) Tree(dir string) (*chunkstore.Tree, error) {
	if t := f.D.Tree(); t != nil && dir == "" {
		return t, nil
	}
	return nil, fmt.Errorf("folder %q: %w", dir, chunkstore.ErrNotFound)
}

// TreeByID serves the folder's tree.
func (f Files) TreeByID(id chunkstore.TreeID) (*chunkstore.Tree, error) {
	if t := f.D.Tree(); t != nil && t.ID == id {
		return t, nil
	}
	return nil, fmt.Errorf("folder %s: %w", id, chunkstore.ErrNotFound)
}

// Holdings is what the node announces: the file or the folder, partial
// until complete. A folder's files are found through its tree id.
func (f Files) Holdings() []server.FileInfo {
	if t := f.D.Tree(); t != nil {
		files, _ := t.Files()
		return []server.FileInfo{{ID: chunkstore.ID(t.ID), Name: f.Name, Size: f.D.Size(), Tree: true, Files: files, Partial: !f.D.Complete()}}
	}
	m := f.D.Manifest()
	return []server.FileInfo{{ID: m.ID, Name: m.Name, Size: m.Size, Partial: !f.D.Complete()}}
}

// reader reads one file's verified chunks out of the download's.
type reader struct {
	d     *client.Download
	m     *chunkstore.Manifest
	first int
}

func (r reader) Manifest() *chunkstore.Manifest { return r.m }
func (r reader) ReadChunk(i int, buf []byte) ([]byte, error) {
	if i < 0 || i >= r.m.NumChunks() {
		return nil, fmt.Errorf("chunk %d of %d: %w", i, r.m.NumChunks(), chunkstore.ErrOutOfRange)
	}
	return r.d.ReadChunk(r.first+i, buf)
}
func (r reader) Close() error { return nil }

// Config configures a serving download.
type Config struct {
	// Download tunes the download; Serve and Exclude are set here.
	Download client.Config
	// Discoverer finds the file and its peers.
	Discoverer client.Discoverer
	// Folder, if set, is fetched instead of Discoverer's file: a folder,
	// served and announced by its tree id as it arrives.
	Folder client.TreeDiscoverer
	// FolderName is the folder's name on the network, announced with it.
	FolderName string
	// Out is the output path.
	Out string
	// Listener is where the download serves its chunks.
	Listener net.Listener
	// Registry is the registry to announce to.
	Registry string
	// PeerID names the node; empty picks one.
	PeerID string
	// Rate caps this peer's uploads, bytes per second; 0 is unlimited.
	Rate int64
	// SeedFor is how long to keep serving once complete; 0 serves until
	// ctx ends, a negative value stops at once.
	SeedFor time.Duration
	// ServerOptions (TLS credentials, say) apply to the serving node.
	ServerOptions []grpc.ServerOption
	// DialOptions reach the registry (credentials, token); nil is
	// plaintext.
	DialOptions []grpc.DialOption
	// Logger receives the node's logs; nil discards.
	Logger *slog.Logger
	// Node, if set, is called with the node once it serves.
	Node func(*server.Node)
	// Completed, if set, is called once the file is complete and renamed.
	Completed func(*client.Report)
}

// Get downloads while serving, then seeds for SeedFor, then leaves.
func Get(ctx context.Context, cfg Config) (*client.Report, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PeerID == "" {
		cfg.PeerID = "dl-" + cfg.Listener.Addr().String()
	}
	dcfg := cfg.Download
	dcfg.Serve = true
	dcfg.RarestFirst = true
	dcfg.Exclude = append(dcfg.Exclude, cfg.PeerID)
	d := client.NewDownload(dcfg, cfg.Discoverer, cfg.Out)
	if cfg.Folder != nil {
		d = client.NewTreeDownload(dcfg, cfg.Folder, cfg.Out)
	}
	defer d.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		rep *client.Report
		err error
	}
	runc := make(chan result, 1)
	go func() {
		rep, err := d.Run(ctx)
		runc <- result{rep, err}
	}()
	var (
		res  result
		done bool // res holds Run's result
	)
	select {
	case <-d.Ready():
	case res = <-runc:
		done = true
		select {
		case <-d.Ready(): // already complete: seed it
		default:
			cfg.Listener.Close()
			return res.rep, res.err // failed before it could serve
		}
	}
	files := Files{D: d, Name: cfg.FolderName}
	pc := server.DefaultPeerConfig()
	pc.Throttle = server.NewThrottle(cfg.Rate)
	node, err := server.NewNode(server.NodeConfig{
		Listener: cfg.Listener, PeerID: cfg.PeerID, Files: files,
		Registries: []string{cfg.Registry}, Peer: pc, Logger: cfg.Logger,
		Server: server.Config{Options: cfg.ServerOptions}, DialOptions: cfg.DialOptions,
	})
	if err != nil {
		cancel()
		<-runc
		return nil, err
	}
	nodeCtx, stopNode := context.WithCancel(context.WithoutCancel(ctx))
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- node.Run(nodeCtx) }()
	defer func() {
		stopNode()
		if err := <-nodeDone; err != nil && !errors.Is(err, context.Canceled) {
			cfg.Logger.Warn("serving node stopped", "err", err)
		}
	}()
	if cfg.Node != nil {
		cfg.Node(node)
	}
	if !done {
		res = <-runc
	}
	if res.err != nil {
		return res.rep, res.err
	}
	if cfg.Completed != nil {
		cfg.Completed(res.rep)
	}
	node.Reannounce() // now a complete holder
	switch {
	case cfg.SeedFor < 0:
	case cfg.SeedFor == 0:
		<-ctx.Done()
	default:
		t := time.NewTimer(cfg.SeedFor)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return res.rep, nil
}
