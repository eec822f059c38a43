package client

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Each holder a download starts with is asked, before the manifest
// arrives, for earlyStreams requests of earlyBytes each: a stream window
// each, the connection's window in all, which a holder sends without
// waiting for the client to read. Two requests, as a worker keeps two
// under way (Config.StreamsPerPeer): a far holder is still sending them
// when the requests the worker sends on the manifest's arrival reach it.
const (
	earlyBytes   = windowBytes
	earlyStreams = 2
)

// earlyReq is a GetChunks request sent before the manifest arrived, as
// soon as the connection to the holder is up: the first request of the
// holder's worker, saving it the round trip it would wait after the
// manifest. Its chunks are predicted from the file's size as the registry
// reported it: a shoal peer cuts a file of size bytes into chunks of
// chunkstore.ChunkSizeFor(size). The download takes the request up if the
// manifest bears the prediction out and the chunks are still wanted (a
// resumed download may hold them); otherwise it is cancelled. Its chunks
// are verified against the manifest like any others.
type earlyReq struct {
	chunks    []int
	chunkSize int

	mu     sync.Mutex
	stream grpc.ClientStream  // nil until sent; guarded by mu
	cancel context.CancelFunc // ends stream, or its sending; guarded by mu
	sent   time.Time          // when the request went; guarded by mu
	done   bool               // taken up or dropped; guarded by mu
}

// earlyPlan gives each of holders its earlyReqs, from the file's first
// chunks on: holder 0 the first earlyStreams requests, holder 1 the next,
// and so on while chunks last. Holders that may hold only part of the
// file get none.
func earlyPlan(file *shoalv1.FileInfo, holders []*shoalv1.PeerInfo) [][]*earlyReq {
	plan := make([][]*earlyReq, len(holders))
	size := int64(file.GetSize())
	if size <= 0 {
		return plan
	}
	cs := chunkstore.ChunkSizeFor(size)
	n := int((size + int64(cs) - 1) / int64(cs))
	per := max(1, earlyBytes/cs)
	next := 0
	for k, h := range holders {
		if partialHolder(h) {
			continue
		}
		for range earlyStreams {
			if next >= n {
				return plan
			}
			e := &earlyReq{chunkSize: cs}
			for i := next; i < min(n, next+per); i++ {
				e.chunks = append(e.chunks, i)
			}
			next += per
			plan[k] = append(plan[k], e)
		}
	}
	return plan
}

// partialHolder reports whether h said it holds only part of a file (or
// hides which chunks it holds).
func partialHolder(h *shoalv1.PeerInfo) bool {
	for _, f := range h.GetFiles() {
		if f.GetPartial() || f.GetHidesChunks() {
			return true
		}
	}
	return false
}

// send sends e's request for the file id over cc, a ready connection,
// as client clientID. It does nothing once e is taken up or dropped.
func (e *earlyReq) send(cc *grpc.ClientConn, id, clientID string) {
	if e == nil {
		return
	}
	// The stream ends when the download takes it up and finishes it, or
	// when e is dropped: by the manifest, by the worker, or with the
	// peer's connections; a drop while it is being sent cancels that.
	ctx, cancel := context.WithCancel(withClientID(context.Background(), clientID))
	e.mu.Lock()
	if e.done {
		e.mu.Unlock()
		cancel()
		return
	}
	e.cancel = cancel
	e.mu.Unlock()
	sent := time.Now()
	stream, err := sendChunks(ctx, cc, fileRequest(id, e.chunks))
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil || e.done {
		cancel()
		return
	}
	e.stream, e.sent = stream, sent
}

// want is the chunks e asks for and when it was sent (zero if not yet),
// or nil once e is taken up or dropped.
func (e *earlyReq) want() ([]int, time.Time) {
	if e == nil {
		return nil, time.Time{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return nil, time.Time{}
	}
	return e.chunks, e.sent
}

// take hands over e's stream, and its cancel, if e was sent for exactly
// chunks, and marks e done; if it is still being sent, that is cancelled
// and the caller gets nil, to send its own. A request for other chunks
// gets nil and leaves e be: the worker's other requests may go first.
func (e *earlyReq) take(chunks []int) (grpc.ClientStream, context.CancelFunc) {
	if e == nil {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done || !slices.Equal(chunks, e.chunks) {
		return nil, nil
	}
	e.done = true
	s, c := e.stream, e.cancel
	e.stream, e.cancel = nil, nil
	if s == nil {
		if c != nil {
			c()
		}
		return nil, nil
	}
	return s, c
}

// drop cancels e unless it was taken up.
func (e *earlyReq) drop() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.done = true
	if e.cancel != nil {
		e.cancel()
	}
	e.stream, e.cancel = nil, nil
}

// fits reports whether m bears out e's prediction of its chunks.
func (e *earlyReq) fits(m *chunkstore.Manifest) bool {
	return e == nil || (int(m.ChunkSize) == e.chunkSize && e.chunks[len(e.chunks)-1] < m.NumChunks())
}
