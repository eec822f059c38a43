package client

import (
	"context"
	"errors"
	"fmt"
	"io"

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
