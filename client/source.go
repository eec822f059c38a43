package client

import (
	"context"

	"github.com/shoalnet/shoal/chunkstore"
)

// Source is one peer serving one file's chunks.
type Source interface {
	// ID names the peer for exclusion lists and reports.
	ID() string
	// Addr is where the peer is, for reports.
	Addr() string
	// Fetch requests chunks and calls got for each one complete, in any
	// order, with its bytes in one or more pieces (so a source can hand
	// over the buffers it received into without copying). The pieces are
	// only valid during the call; an error from got ends the fetch with
	// that error.
	Fetch(ctx context.Context, chunks []int, got func(i int, pieces [][]byte) error) error
	// Close releases the connection.
	Close() error
}

// HaveSource is a Source that may hold only some chunks: a downloader
// that serves what it has verified so far.
type HaveSource interface {
	Source
	// Partial reports whether the peer said it holds only part of the file.
	Partial() bool
	// WatchHave calls fn with the chunks held now (have), then with each
	// batch of chunks added, until ctx ends or the stream fails.
	WatchHave(ctx context.Context, fn func(have []bool, added []int)) error
}

// SequentialSource is a Source that sends the file from its start, in
// order, as one stream (the course protocol's whole-file GET, which is
// paced per byte but pays its request delay once). Asked for chunk i, it
// reads past the chunks before i; it can never go back. Its worker takes
// the first pending chunk at or after Next, so with Config.TailFirst the
// other sources work from the end of the file and the stream meets them.
type SequentialSource interface {
	Source
	// Next is the first chunk the source can still deliver: 0 before its
	// stream opens or after it had to reopen it.
	Next() int
	// Left tells the source, before each Fetch, how many chunks are not
	// yet written by anyone: what a restart of its stream would weigh
	// against.
	Left(chunks int)
}

// earlySource is a Source with requests sent before the download began
// (see earlyReq): its worker's first requests, if their chunks are still
// pending; else the worker drops them.
type earlySource interface {
	early() []*earlyReq
}

// Discoverer finds a file's manifest and the peers that hold it.
type Discoverer interface {
	// Manifest returns the verified manifest of the file to download. A
	// manifest without chunk hashes (Hashes empty) is downloaded
	// unverified: only for protocols that carry none.
	Manifest(ctx context.Context) (*chunkstore.Manifest, error)
	// Discover returns up to limit new peers, none of them in exclude.
	Discover(ctx context.Context, exclude []string, limit int) ([]Source, error)
}

// Forecaster is a Discoverer that can tell how fast the next peer it would
// return is expected to be. With it, ReplaceSlowest also moves the slowest
// peer's slot to a peer expected clearly faster, even when all working
// peers are alike.
type Forecaster interface {
	// Forecast is the expected rate, in bytes per second, of the next peer
	// Discover would return for exclude; ok is false when there is none.
	Forecast(exclude []string) (bytesPerSec float64, ok bool)
}
