// Package client downloads one file from many peers at once.
//
// A Download asks a Discoverer for the file's manifest and for peers, runs
// one worker per peer (five by default), and feeds every worker from one
// shared chunk queue, so fast peers do more of the work. Each worker keeps
// two streaming requests open, so the next request is under way before the
// current one drains; the size of each request follows the peer's measured
// rate. Every chunk is checked against its SHA-256 before it is written at
// its offset in OUT.part; the finished file is synced and renamed to OUT
// (with Config.VerifyOutput it is read back and checked whole first).
//
// Sources and discoverers are small interfaces declared here: gRPC peers
// found through a registry satisfy them, and so do the course protocol's
// peers found through its tracker.
//
// # NOTES
//
// Endgame. When the queue is empty, an idle worker takes a second copy of
// the oldest in-flight chunk that has one requester and is not its own, as
// a single-chunk request. The first verified copy is written; any request
// whose chunks are all written elsewhere is cancelled. At most two workers
// ever request a chunk.
//
// Stalls. A request that delivers no chunk for Config.StallTimeout is
// cancelled and its peer dropped. The timeout must exceed one chunk's time
// at the slowest rate a peer may legitimately have.
//
// Replacement. A peer that fails, disconnects, stalls or sends a chunk that
// does not match its hash is dropped for the rest of the download; its
// in-flight chunks go back to the front of the queue. The pool then asks
// the discoverer for more peers, excluding every peer it has tried, with
// exponential backoff, and keeps up to Config.Peers working. When no peer
// is working and none is found for Config.NoPeerTimeout, the download fails
// and OUT.part stays for a resume.
//
// Resume. OUT.part is the journal: on start every chunk already in it is
// hashed, and chunks that match the manifest are not fetched again. This
// needs no separate journal file that could disagree with the data.
//
// Writes. Chunks are written in Config.WriteSize pieces (32 KiB), not whole:
// on the Linux 6.18 VMs shoal is benchmarked on, writing 1 GiB into fresh
// page cache took 2.4 s of system time in 1 MiB pwrites and 0.35 s in 32 KiB
// ones (4 KiB: 0.73 s). Every Config.WritebackEvery bytes the kernel is told
// to start writeback (sync_file_range), so the fsync before the rename
// finds little left to write: 0.45 s of waiting for 1 GiB became 0.05 s.
package client
