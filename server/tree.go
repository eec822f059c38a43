package server

import (
	"fmt"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Trees is what a Files serves when it also serves folders.
type Trees interface {
	// Tree returns the tree of a folder by its path ("" is the shared
	// folder).
	Tree(dir string) (*chunkstore.Tree, error)
	// TreeByID returns the tree of a folder by its tree id.
	TreeByID(id chunkstore.TreeID) (*chunkstore.Tree, error)
}

// Tree serves the store's folder trees.
func (s StoreFiles) Tree(dir string) (*chunkstore.Tree, error) { return s.Store.Tree(dir) }

// TreeByID serves the store's folder trees by id.
func (s StoreFiles) TreeByID(id chunkstore.TreeID) (*chunkstore.Tree, error) {
	return s.Store.TreeByID(id)
}

// A GetTreeResponse carries at most treePage entries and about
// treePageBytes of them, so a page fits any client's message limit (shoal
// clients take 1 MiB), whatever the paths' lengths.
const (
	treePage      = 1000
	treePageBytes = 512 << 10
)

// GetTree streams a folder's tree, treePage entries per message.
func (p *PeerService) GetTree(req *shoalv1.GetTreeRequest, stream grpc.ServerStreamingServer[shoalv1.GetTreeResponse]) error {
	trees, ok := p.files.(Trees)
	if !ok {
		return toStatus(fmt.Errorf("this peer serves no folders: %w", chunkstore.ErrNotFound))
	}
	var (
		t   *chunkstore.Tree
		err error
	)
	switch sel := req.GetTree().(type) {
	case *shoalv1.GetTreeRequest_TreeId:
		var id chunkstore.TreeID
		if id, err = chunkstore.ParseTreeID(sel.TreeId); err == nil {
			t, err = trees.TreeByID(id)
		}
	case *shoalv1.GetTreeRequest_Path:
		t, err = trees.Tree(sel.Path)
	default:
		err = fmt.Errorf("%w: name a folder by tree_id or path", errInvalid)
	}
	if err != nil {
		return toStatus(err)
	}
	// The first page carries the id and the count; an empty tree is that
	// page alone.
	resp := &shoalv1.GetTreeResponse{TreeId: t.ID.String(), EntryCount: uint64(len(t.Entries))}
	bytes := 0
	for i, e := range t.Entries {
		resp.Entries = append(resp.Entries, TreeEntryToWire(e))
		bytes += len(e.Path) + 80 // the path, the id's text and the envelope
		if (len(resp.Entries) == treePage || bytes >= treePageBytes) && i < len(t.Entries)-1 {
			if err := stream.Send(resp); err != nil {
				return err
			}
			resp, bytes = &shoalv1.GetTreeResponse{}, 0
		}
	}
	return stream.Send(resp)
}

// TreeEntryToWire converts a tree entry to its wire form; the client's
// TreeEntryFromWire is its inverse.
func TreeEntryToWire(e chunkstore.TreeEntry) *shoalv1.TreeEntry {
	w := &shoalv1.TreeEntry{Path: e.Path, Dir: e.Dir, Executable: e.Executable}
	if !e.Dir {
		w.Size, w.ContentId = uint64(e.Size), e.File.String()
	}
	return w
}
