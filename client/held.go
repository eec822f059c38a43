package client

import (
	"context"
	"fmt"

	"github.com/shoalnet/shoal/chunkstore"
)

// A download serves what it holds: with Config.Serve, the methods below
// let a PeerService hand out its verified chunks while it runs and after.

// Ready is closed once the download knows its manifest and has its part
// file open: from then on it can serve the chunks it has verified.
func (d *Download) Ready() <-chan struct{} { return d.ready }

// Manifest is the file's manifest, nil for a folder; valid once Ready is
// closed.
func (d *Download) Manifest() *chunkstore.Manifest { return d.m }

// File finds a file of the download by content id (the file, or one of
// the folder's files): its manifest and the position of its chunk 0 in the
// download's chunks (Have, ReadChunk, WatchHave). Valid once Ready is
// closed.
func (d *Download) File(id chunkstore.ID) (m *chunkstore.Manifest, first int, ok bool) {
	k, ok := d.lay.index[id]
	if !ok {
		return nil, 0, false
	}
	return d.lay.files[k], d.lay.first[k], true
}

// Size is the bytes of the download's files, each distinct file once.
// Valid once Ready is closed.
func (d *Download) Size() int64 { return d.lay.size }

// Have reports which chunks are verified and written.
func (d *Download) Have() []bool {
	have, _ := d.s.doneSet()
	return have
}

// Complete reports whether every chunk is verified and written.
func (d *Download) Complete() bool { return isClosed(d.s.finished) }

// ReadChunk reads verified chunk i into buf; a chunk not yet verified is
// ErrChunkNotHeld. Valid once Ready is closed, until Close.
func (d *Download) ReadChunk(i int, buf []byte) ([]byte, error) {
	if i < 0 || i >= d.s.chunks() {
		return nil, fmt.Errorf("chunk %d of %d: %w", i, d.s.chunks(), chunkstore.ErrOutOfRange)
	}
	if !d.s.isDone(i) {
		return nil, fmt.Errorf("chunk %d: %w", i, chunkstore.ErrChunkNotHeld)
	}
	b, err := d.o.readChunk(i, buf)
	if err != nil {
		return nil, fmt.Errorf("read chunk %d: %w", i, err)
	}
	return b, nil
}

// WatchHave calls fn with the verified chunks, then with each batch added,
// until ctx ends; the last call has complete set. fn's error ends it.
func (d *Download) WatchHave(ctx context.Context, fn func(have []bool, added []int, complete bool) error) error {
	have, wait := d.s.doneSet()
	if err := fn(have, nil, d.Complete()); err != nil || d.Complete() {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
		var added []int
		added, wait = d.s.addDone(have)
		complete := d.Complete()
		if len(added) > 0 || complete {
			if err := fn(have, added, complete); err != nil {
				return err
			}
		}
		if complete {
			return nil
		}
	}
}

// Close releases the file a serving download keeps open after Run.
func (d *Download) Close() error {
	select {
	case <-d.ready:
		d.o.close()
	default:
	}
	return nil
}
