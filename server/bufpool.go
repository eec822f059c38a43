package server

import (
	"sync"

	"github.com/shoalnet/shoal/chunkstore"
)

// chunkPool is a grpc mem.BufferPool of chunk buffers that, unlike grpc's
// default pool, does not zero what it hands out: every byte of a chunk
// buffer is overwritten by the read before it is sent (a short read is an
// error). Zeroing cost the servers 18% of their CPU in a 1 GiB download.
type chunkPool struct{ p sync.Pool }

// Get returns a buffer of length n, at most MaxChunkSize.
func (c *chunkPool) Get(n int) *[]byte {
	if b, ok := c.p.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, chunkstore.MaxChunkSize)
	return &b
}

// Put takes back a buffer Get made.
func (c *chunkPool) Put(b *[]byte) {
	if cap(*b) == chunkstore.MaxChunkSize {
		c.p.Put(b)
	}
}
