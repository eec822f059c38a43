package client

import (
	"os"
	"runtime"
	"time"
)

// Config tunes a download. The zero value of a field means its default.
type Config struct {
	// Peers is how many peers work at once. Default 5.
	Peers int
	// StallTimeout drops a peer whose request delivers no chunk for this
	// long. Default 20 s: a 1 MiB chunk from a peer capped at 64 KiB/s.
	StallTimeout time.Duration
	// NoPeerTimeout fails the download when no peer has been working for
	// this long. Default 15 s.
	NoPeerTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between discovery attempts
	// while fewer than Peers are working. Defaults 100 ms and 3 s.
	MinBackoff, MaxBackoff time.Duration
	// BatchTarget is how much work one request should hold, as time at the
	// peer's measured rate; it sets how many chunks a request asks for.
	// Default 250 ms.
	BatchTarget time.Duration
	// MaxBatch caps the chunks per request, unless more are needed to
	// keep a distant peer busy over its round trip. Default 16.
	MaxBatch int
	// StreamsPerPeer is how many requests each peer has open at once, so
	// one starts before the other drains. Default 2.
	StreamsPerPeer int
	// VerifyWorkers hash on resume and on the final check. Default
	// GOMAXPROCS.
	VerifyWorkers int
	// VerifyOutput reads the finished file back and checks every chunk
	// before the rename, on top of the check of each chunk before it is
	// written. It costs a full read and hash of the file.
	VerifyOutput bool
	// ReplaceSlowest, if positive, is how often the pool checks its peers
	// while all Peers slots are busy: when the slowest is under 85% of the
	// others' mean rate and the discoverer has an untried peer, it closes
	// the slowest first, then starts the new one (the count never goes
	// over Peers). For sources whose speeds differ a lot, like the course
	// protocol's ports.
	ReplaceSlowest time.Duration
	// FinishDuplicates lets an endgame request run to its end after another
	// copy won, instead of cancelling it: for protocols where cutting a
	// request costs the connection and the server counts connections
	// (the course protocol).
	FinishDuplicates bool
	// TailFirst makes every source but a SequentialSource take chunks
	// from the end of the file backwards, so they meet a sequential
	// stream coming from the start instead of racing it.
	TailFirst bool
	// Exclude lists peer ids never to download from: a serving download's
	// own id, so it does not find itself in the registry.
	Exclude []string
	// RarestFirst picks, for every peer, the pending chunks the fewest
	// peers hold, at random among equals, instead of file order. Swarms
	// use it so downloaders spread over different chunks.
	RarestFirst bool
	// Serve keeps the file open after Run so the download can go on
	// serving its chunks (see ReadChunk); call Close when done.
	Serve bool
	// MaxRate caps the download, over all peers, in bytes per second; 0 is
	// unlimited. Chunks are taken off the connections no faster, so flow
	// control slows the peers down.
	MaxRate int64
	// Force overwrites an existing output with other contents.
	Force bool
	// WriteSize is the most bytes one write call stores. Default 32 KiB:
	// on the Linux kernels measured (6.18, ext4) a 1 MiB pwrite into fresh
	// page cache cost 5x the system time of the same bytes in 32 KiB
	// writes (see NOTES in doc.go).
	WriteSize int
	// WritebackEvery flushes the part file to disk in the background
	// (an fsync, one at a time) every time this many bytes were written,
	// so the fsync before the rename waits only for the tail. Default
	// 8 MiB; negative: never.
	WritebackEvery int64
	// Direct writes chunks with O_DIRECT, on Linux and for chunk sizes
	// that are multiples of 4 KiB: less system time than through the page
	// cache, and more wall time (see Writes in doc.go). A file system that
	// refuses O_DIRECT gets page-cache writes either way.
	Direct bool
	// OpenPart opens the partial file; tests inject failures. Default
	// os.OpenFile(path, O_RDWR|O_CREATE|O_NOFOLLOW, 0o644).
	OpenPart func(path string) (PartFile, error)
}

// PartFile is the partial output file.
type PartFile interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Close() error
}

func (c Config) withDefaults() Config {
	if c.Peers <= 0 {
		c.Peers = 5
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 20 * time.Second
	}
	if c.NoPeerTimeout <= 0 {
		c.NoPeerTimeout = 15 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 3 * time.Second
	}
	if c.BatchTarget <= 0 {
		c.BatchTarget = 250 * time.Millisecond
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 16
	}
	if c.StreamsPerPeer <= 0 {
		c.StreamsPerPeer = 2
	}
	if c.VerifyWorkers <= 0 {
		c.VerifyWorkers = runtime.GOMAXPROCS(0)
	}
	if c.WriteSize <= 0 {
		c.WriteSize = 32 << 10
	}
	if c.WritebackEvery == 0 {
		c.WritebackEvery = 8 << 20
	}
	if c.OpenPart == nil {
		c.OpenPart = func(p string) (PartFile, error) { return os.OpenFile(p, partFlags, 0o644) }
	}
	return c
}
