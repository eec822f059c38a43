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
// a single-chunk request; a worker with a request still under way does so
// only for the chunks of a peer sending at under a third of its rate (a
// far peer is idle only a round trip after its last request ends, and
// equal peers copying each other would halve each other's upload). The
// first verified copy is written; any request whose chunks are all written
// elsewhere is cancelled. At most two workers ever request a chunk.
//
// Sequential sources. A SequentialSource (the course protocol's
// whole-file stream) can only move forward from its start: its worker takes
// the first pending chunk at or after the source's position, one at a time,
// and with none pending a second copy of a chunk in flight there, since the
// stream passes it anyway. With Config.TailFirst the other workers take
// chunks from the end backwards, so the two meet instead of racing. The
// replacement check never picks a sequential source: its rate, which pays
// the request delay once, is not comparable with the others'.
//
// Distance. Connections start with windows of 2 MiB a stream and 4 MiB a
// connection: enough on loopback or a LAN, and what several local peers
// push ahead of a client slower than they are stays small (12.8 MiB each
// for five doubled the client's CPU time in a CPU-bound local download).
// Alongside its first requests each peer gets three health checks; the
// shortest round trip makes every request also cover two round trips of
// the peer's rate, and a peer over 50 ms away gets a second connection
// with a wide window (64 MiB shared by the download's peers, at least 4
// MiB each) for its later requests. A window of W holds a peer to W per
// round trip: 4 MiB over 100 ms is 40 MB/s. Waits for a request's first
// chunk are no measure of distance: on a busy loopback they were up to
// 125 ms behind the connection's other stream. A peer slower than 50 ms
// to connect (timed before data flows: while the manifest is fetched, or
// alongside the first requests) is widened at once; one that connected
// within 25 ms is never widened by its health checks, which a busy client
// times behind its own work (five local peers on two cores measured
// 40-140 ms). A request's rate leaves out the peer's round trip
// (at most half the request's time), so a far peer's first small requests
// measure its sending, not its distance, and the next ones grow to match;
// mid-request a far peer's rate is taken only after two round trips, as
// a request's first chunk says how far the peer is, not how fast. A far
// peer's two requests are served interleaved and would end together, so
// a far request frees its slot once what is left of it would arrive
// within 1.5 round trips: the peer's next request is then on its way.
//
// First requests. Registry.Manifest connects to the first holders while
// it fetches the manifest, and as soon as each connection is up sends it
// two requests of 2 MiB (a stream window each, the connection's in all) of
// the file's first chunks, guessed from the size the registry reported: a
// shoal peer cuts a file of that size into chunkstore.ChunkSizeFor(size)
// chunks. Their chunks are set aside for that peer's worker, which takes
// the requests up as its first two; a manifest that proves the guess wrong,
// or a .part that holds those chunks already, drops them. Chunks are
// verified against the manifest as any others. A holder slower than 50 ms
// to connect gets its wide connection dialed there and then too. Both save
// the round trip after the manifest: 5 capped sources 50 ms away each way
// took 5.40 s for 512 MiB instead of 5.54 s. The windows carry 64 KiB of
// slack so that a request of a window's worth of chunks never waits for
// the client to read before its last bytes.
//
// Shares. A peer's rate counts each chunk as at least 64 KiB, and a
// folder's request holds at most its share of the chunks left among the
// workers: otherwise one fast peer took a thousand small files at once and
// the others copied them one request each.
//
// Super-seeders. A client sends a random shoal-client-id with WatchHave
// and GetChunks, so that a super-seeder, which reveals more chunks to a
// client as it sends them, sees one client over the first connection and
// a widened one.
//
// Stalls. A request that delivers no chunk for Config.StallTimeout is
// cancelled and its peer dropped. The timeout must exceed one chunk's time
// at the slowest rate a peer may legitimately have.
//
// Failures. Every error a peer or registry reports, over gRPC or the
// course protocol, wraps one sentinel of failure.go (servers send an
// ErrorInfo reason where one status code has several meanings), and one
// table, decide, says what follows: a chunk the peer does not hold yet
// goes back to the queue and the peer is never asked for it again; a busy
// or rehashing peer is backed off, from MinBackoff doubling to MaxBackoff,
// and dropped as busy after six back-offs in a row; a peer that sends
// corrupt bytes, breaks the protocol, stalls, cannot be reached or no
// longer holds the file is dropped; a cancel, a disk error or a name that
// now names other contents ends the download. A drop's reason is a
// DropReason value in the report.
//
// Replacement. A dropped peer is not asked again in this download; its
// in-flight chunks go back to the front of the queue. The pool then asks
// the discoverer for more peers, excluding every peer it has tried, with
// exponential backoff, and keeps up to Config.Peers working. When no
// request has been under way for Config.NoPeerTimeout (no peer found, or
// the peers connected hold no chunk still needed), the download fails and
// OUT.part stays for a resume.
//
// One download per output. OUT.part is locked (flock) while a download
// runs: a second download of the same output fails at once with
// ErrBusyOutput, naming the process that holds it. Neither OUT nor OUT.part
// is ever opened through a symbolic link.
//
// Resume. OUT.part is the journal: on start every chunk already in it is
// hashed, and chunks that match the manifest are not fetched again. This
// needs no separate journal file that could disagree with the data.
//
// Writes. Chunks go through the page cache in Config.WriteSize pieces
// (32 KiB), several per pwritev: 1 MiB pwrites took 2.4 s of system time
// per GiB against 0.35 s in 32 KiB ones. With Config.Direct, on Linux, a
// chunk is copied into an aligned buffer and written with O_DIRECT (the
// last one padded, the file truncated at the end), which costs less system
// time and more wall time: each write waits for the disk. Side by side,
// 1 GiB from 5 local peers on the 6.18 VMs shoal is benchmarked on took
// 1.62-1.75 s through the page cache and 2.13-2.56 s direct with most of
// the memory free, 1.99-2.31 s and 2.22-2.74 s with the page cache full
// of another file (system time 0.86-0.89 and 0.59-0.79 s, then 1.26-2.02
// and 0.63-0.80 s); an earlier week measured 0.85 to 3.7 s of system time
// through the page cache. Direct was the default until then. Either way,
// every Config.WritebackEvery bytes (8 MiB) the part file is fsynced in the
// background, one at a time, so the fsync before the rename finds little
// left: direct writes leave no dirty pages but sit in the disk's write
// cache, and on those VMs the final fsync of 1 GiB written directly took
// 0.5 s, the same of 512 MiB arriving at 100 MB/s 0.2 s (3 ms now). Where
// the disk is slower than the download (1 GiB from 5 local peers), the
// flushes slow the writes as much as they save at the end: durability
// costs the disk's time either way.
package client
