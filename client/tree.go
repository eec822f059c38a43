package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Tree limits: the entries one tree may have, and one page of it.
const (
	maxTreeEntries = 1_000_000
	maxTreePage    = 1000
)

// FetchTree asks the peer at conn for a folder's tree: by id when id is
// set (the tree must hash to it), else by path in the peer's shared
// folder. Every entry is checked (chunkstore.Tree.Validate): a tree with a
// path that could leave the folder it is written into, a duplicate, or a
// file that is also a folder is refused with the entry named.
func FetchTree(ctx context.Context, conn grpc.ClientConnInterface, id *chunkstore.TreeID, path string) (*chunkstore.Tree, error) {
	req := &shoalv1.GetTreeRequest{Tree: &shoalv1.GetTreeRequest_Path{Path: path}}
	if id != nil {
		req.Tree = &shoalv1.GetTreeRequest_TreeId{TreeId: id.String()}
	}
	stream, err := shoalv1.NewPeerServiceClient(conn).GetTree(ctx, req)
	if err != nil {
		return nil, fromStatus("tree", err)
	}
	t := &chunkstore.Tree{}
	var (
		want  uint64
		claim chunkstore.TreeID
	)
	for page := 0; ; page++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fromStatus("tree", err)
		}
		if page == 0 {
			if claim, err = chunkstore.ParseTreeID(msg.GetTreeId()); err != nil {
				return nil, fmt.Errorf("%w: tree: %w", ErrProtocol, err)
			}
			if want = msg.GetEntryCount(); want > maxTreeEntries {
				return nil, fmt.Errorf("%w: a tree of %d entries, at most %d", ErrProtocol, want, maxTreeEntries)
			}
			t.Entries = make([]chunkstore.TreeEntry, 0, want)
		}
		if len(msg.GetEntries()) > maxTreePage || uint64(len(t.Entries)+len(msg.GetEntries())) > want {
			return nil, fmt.Errorf("%w: tree page %d of %d entries past the %d announced", ErrProtocol, page, len(msg.GetEntries()), want)
		}
		for _, w := range msg.GetEntries() {
			e, err := TreeEntryFromWire(w)
			if err != nil {
				return nil, fmt.Errorf("%w: tree entry %d: %w", ErrProtocol, len(t.Entries), err)
			}
			t.Entries = append(t.Entries, e)
		}
	}
	if uint64(len(t.Entries)) != want {
		return nil, fmt.Errorf("%w: tree ended after %d of %d entries", ErrProtocol, len(t.Entries), want)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	t.ID = chunkstore.ComputeTreeID(t)
	if t.ID != claim || id != nil && t.ID != *id {
		return nil, fmt.Errorf("%w: tree does not hash to its id", ErrCorrupt)
	}
	return t, nil
}

// TreeEntryFromWire converts a wire tree entry; the tree's Validate checks
// its path.
func TreeEntryFromWire(w *shoalv1.TreeEntry) (chunkstore.TreeEntry, error) {
	e := chunkstore.TreeEntry{Path: w.GetPath(), Dir: w.GetDir(), Size: int64(w.GetSize()), Executable: w.GetExecutable()}
	if w.GetSize() > 1<<50 {
		return e, fmt.Errorf("%w: size %d", chunkstore.ErrBadTree, w.GetSize())
	}
	if !e.Dir {
		id, err := chunkstore.ParseID(w.GetContentId())
		if err != nil {
			return e, err
		}
		e.File = id
	} else if w.GetContentId() != "" || w.GetSize() != 0 {
		return e, fmt.Errorf("%w: folder %s with a size or content id", chunkstore.ErrBadTree, chunkstore.Clip(e.Path))
	}
	return e, nil
}

// GetManifests batching: ids per call, and calls under way at once.
const (
	manifestBatch    = 1000
	manifestParallel = 4
)

// FetchManifests fetches, from the peer at conn, the manifest of every
// distinct non-empty file of t, in the order the files first appear, and
// checks each against the tree's content id and size for it. A manifest
// keeps the path of the file's first entry as its name.
func FetchManifests(ctx context.Context, conn grpc.ClientConnInterface, t *chunkstore.Tree) ([]*chunkstore.Manifest, error) {
	var (
		ids     []chunkstore.ID
		entries []int // the first entry of each id
		largest int64
		seen    = map[chunkstore.ID]bool{}
	)
	for k, e := range t.Entries {
		if e.Dir || e.Size == 0 || seen[e.File] {
			continue
		}
		seen[e.File] = true
		ids = append(ids, e.File)
		entries = append(entries, k)
		largest = max(largest, e.Size)
	}
	limit := max(maxMessageBytes, chunkstore.WireBytes(largest)+4096)
	out := make([]*chunkstore.Manifest, len(ids))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestParallel)
	for start := 0; start < len(ids); start += manifestBatch {
		end := min(start+manifestBatch, len(ids))
		g.Go(func() error {
			return fetchManifestBatch(ctx, conn, ids[start:end], limit, func(k int, m *chunkstore.Manifest) error {
				e := t.Entries[entries[start+k]]
				if err := m.Verify(e.File); err != nil || m.Size != e.Size {
					return fmt.Errorf("%w: manifest of %s does not match the tree", ErrProtocol, chunkstore.Clip(e.Path))
				}
				m.Name = e.Path
				out[start+k] = m
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// fetchManifestBatch asks for the manifests of ids in one GetManifests
// call and hands each to got with its position in ids.
func fetchManifestBatch(ctx context.Context, conn grpc.ClientConnInterface, ids []chunkstore.ID, limit int, got func(int, *chunkstore.Manifest) error) error {
	req := &shoalv1.GetManifestsRequest{ContentIds: make([]string, len(ids))}
	for k, id := range ids {
		req.ContentIds[k] = id.String()
	}
	stream, err := shoalv1.NewPeerServiceClient(conn).GetManifests(ctx, req, grpc.MaxCallRecvMsgSize(limit))
	if err != nil {
		return fromStatus("manifests", err)
	}
	n := 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fromStatus("manifests", err)
		}
		if n+len(msg.GetManifests()) > len(ids) {
			return fmt.Errorf("%w: %d manifests for %d files", ErrProtocol, n+len(msg.GetManifests()), len(ids))
		}
		for _, w := range msg.GetManifests() {
			m, err := ManifestFromWire(w)
			if err != nil {
				return fmt.Errorf("%w: manifest %d: %w", ErrProtocol, n, err)
			}
			if err := got(n, m); err != nil {
				return err
			}
			n++
		}
	}
	if n != len(ids) {
		return fmt.Errorf("%w: %d manifests for %d files", ErrProtocol, n, len(ids))
	}
	return nil
}
