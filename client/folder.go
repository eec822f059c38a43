package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
)

// Folder is a tree to download: the tree, checked against its id, and
// the manifest of each distinct non-empty file, each checked against the
// tree's content id for it, in the order the files first appear in the
// tree.
type Folder struct {
	Name  string // the name the network gives the folder ("photos/"), for reports
	Tree  *chunkstore.Tree
	Files []*chunkstore.Manifest
}

// TreeDiscoverer finds a folder's tree and the peers that hold it.
type TreeDiscoverer interface {
	// Folder returns the verified tree and manifests.
	Folder(ctx context.Context) (*Folder, error)
	// Discover returns up to limit new peers, none of them in exclude,
	// each serving the chunks of the folder's files in the folder's
	// layout.
	Discover(ctx context.Context, exclude []string, limit int) ([]Source, error)
}

// NewTreeDownload prepares a download of the folder disc describes to the
// folder dir. Files land in DIR.part/; only a complete, verified tree is
// moved to dir.
func NewTreeDownload(cfg Config, disc TreeDiscoverer, dir string) *Download {
	return &Download{cfg: cfg.withDefaults(), tdis: disc, find: disc, out: dir, ready: make(chan struct{})}
}

// runTree is Run for a folder.
func (d *Download) runTree(ctx context.Context) (*Report, error) {
	f, err := d.tdis.Folder(ctx)
	if err != nil {
		return nil, err
	}
	lay := newLayout(f.Files)
	lay.id = f.Tree.ID.String()
	files, _ := f.Tree.Files()
	d.size.Store(lay.size)
	rep := &Report{Name: f.Name, Size: lay.size, Output: d.out, ContentID: lay.id, Files: files, Peers: []PeerReport{}}
	o, err := openTreeOutput(ctx, d.out, f.Tree, lay, d.cfg)
	if err != nil {
		return nil, err
	}
	d.tree = f.Tree
	rep.FilesReused = o.reused
	if o.already {
		rep.AlreadyDone = true
		d.done.Store(lay.size)
		if d.cfg.Serve {
			d.lay, d.s, d.o = lay, newSched(lay.chunks(), o.have, false), o
			close(d.ready)
		}
		return d.finish(rep), nil
	}
	if !d.cfg.Serve {
		defer o.close()
	}
	d.done.Store(o.resumed)
	d.resumed.Store(o.resumed)
	rep.BytesResumed = o.resumed
	return d.fetchAll(ctx, rep, lay, o, o.have)
}

// Tree is the folder's tree; nil for a file. Valid once Ready is closed.
func (d *Download) Tree() *chunkstore.Tree { return d.tree }

// treeCallTimeout bounds fetching a tree of files entries and their
// manifests from one holder: the registry call timeout, and a second
// more for every 10,000 files.
func treeCallTimeout(base time.Duration, files int) time.Duration {
	return base + time.Duration(files/10_000)*time.Second
}

// Folder looks the folder up (a name without a trailing '/' is also tried
// with one) and fetches its tree and manifests from its holders, taking
// the first holder whose answers all check out. A name or id of a file
// is ErrIsFile. The folder is kept: later calls return it without asking
// again.
func (r *Registry) Folder(ctx context.Context) (*Folder, error) {
	r.mu.Lock()
	kept := r.folder
	r.mu.Unlock()
	if kept != nil {
		return kept, nil
	}
	resp, err := r.lookup(ctx, r.Target, nil, manifestHedge)
	if errors.Is(err, ErrNotFound) && !isID(r.Target) && !strings.HasSuffix(r.Target, "/") {
		if again, aerr := r.lookup(ctx, r.Target+"/", nil, manifestHedge); aerr == nil {
			resp, err = again, nil
		}
	}
	if err != nil {
		return nil, err
	}
	tid, err := chunkstore.ParseTreeID(resp.GetFile().GetContentId())
	if err != nil {
		if _, ferr := chunkstore.ParseID(resp.GetFile().GetContentId()); ferr == nil {
			return nil, fmt.Errorf("%s: %w", chunkstore.Clip(r.Target), ErrIsFile)
		}
		return nil, fmt.Errorf("registry answered a bad tree id: %w", err)
	}
	timeout := treeCallTimeout(r.callTimeout(), int(resp.GetFile().GetFileCount()))
	f, err := fromHolders(ctx, r, resp, "tree", func(ctx context.Context, addr string) (*Folder, error) {
		return r.fetchFolder(ctx, addr, tid, timeout)
	})
	if err != nil {
		return nil, err
	}
	f.Name = resp.GetFile().GetName()
	lay := newLayout(f.Files)
	lay.id = tid.String()
	r.mu.Lock()
	r.lay, r.folder = lay, f
	r.mu.Unlock()
	return f, nil
}

// fetchFolder fetches tree tid and its manifests from the peer at addr,
// all within timeout.
func (r *Registry) fetchFolder(ctx context.Context, addr string, tid chunkstore.TreeID, timeout time.Duration) (*Folder, error) {
	cc, err := grpc.NewClient(addr, r.dialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("tree from %s: %w: %w", addr, ErrUnreachable, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t, err := FetchTree(ctx, cc, &tid, "")
	if err != nil {
		return nil, callError(ctx, "peer", "tree from "+addr, err, timeout)
	}
	files, err := FetchManifests(ctx, cc, t)
	if err != nil {
		return nil, callError(ctx, "peer", "manifests from "+addr, err, timeout)
	}
	return &Folder{Tree: t, Files: files}, nil
}
