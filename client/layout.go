package client

import (
	"fmt"
	"sort"

	"github.com/shoalnet/shoal/chunkstore"
)

// layout lays the files of a download end to end in one chunk space, so
// that one scheduler hands out the chunks of a tree's files as it does
// those of one file: chunk i of files[k] is chunk first[k]+i. A file
// download has a layout of one file.
type layout struct {
	id    string                 // what is downloaded: a content id or a tree id, text form
	files []*chunkstore.Manifest // distinct non-empty files, in tree order
	first []int                  // len(files)+1 entries; the last is the chunk count
	size  int64                  // bytes over all files
	mean  int                    // mean chunk length in bytes, at least 1
	most  int                    // the largest chunk's length in bytes
	index map[chunkstore.ID]int  // position of each file in files
}

// maxTreeBatch caps the chunks of one request for small chunks, well
// within a peer's limit per request (4096 by default).
const maxTreeBatch = 1024

// fileLayout is the layout of one file.
func fileLayout(m *chunkstore.Manifest) *layout {
	l := newLayout([]*chunkstore.Manifest{m})
	if len(m.Hashes) > 0 {
		l.id = m.ID.String()
	}
	return l
}

// newLayout lays files end to end.
func newLayout(files []*chunkstore.Manifest) *layout {
	l := &layout{files: files, first: make([]int, len(files)+1), index: make(map[chunkstore.ID]int, len(files))}
	for k, m := range files {
		l.index[m.ID] = k
		l.first[k+1] = l.first[k] + chunkCount(m)
		l.size += m.Size
		l.most = max(l.most, int(min(int64(m.ChunkSize), m.Size)))
	}
	l.mean = 1
	if n := l.chunks(); n > 0 {
		l.mean = max(1, int(l.size/int64(n)))
	}
	return l
}

// chunkCount is the number of chunks of m, hashed or not.
func chunkCount(m *chunkstore.Manifest) int {
	if len(m.Hashes) > 0 {
		return len(m.Hashes)
	}
	return int((m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize))
}

// chunks is the number of chunks over all files.
func (l *layout) chunks() int { return l.first[len(l.files)] }

// locate returns the file of chunk g and the chunk's index in it.
func (l *layout) locate(g int) (k, i int) {
	if len(l.files) == 1 {
		return 0, g
	}
	k = sort.Search(len(l.files), func(k int) bool { return l.first[k+1] > g })
	return k, g - l.first[k]
}

// bounds returns the file of chunk g and the chunk's offset and length in
// that file.
func (l *layout) bounds(g int) (k int, off int64, n int) {
	k, i := l.locate(g)
	off, n = l.files[k].ChunkBounds(i)
	return k, off, n
}

// verify checks chunk g's bytes against its file's manifest; a file
// without chunk hashes (a protocol that carries none) is checked for
// length only.
func (l *layout) verify(g int, pieces [][]byte) error {
	k, i := l.locate(g)
	m := l.files[k]
	if len(m.Hashes) > 0 {
		if err := m.VerifyPieces(i, pieces); err != nil {
			return fmt.Errorf("%w: chunk %d of %s", ErrCorrupt, i, chunkstore.Clip(m.Name))
		}
		return nil
	}
	size := 0
	for _, b := range pieces {
		size += len(b)
	}
	if _, n := m.ChunkBounds(i); n != size {
		return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrProtocol, i, size, n)
	}
	return nil
}

// bytesOf is the size of chunks gs together.
func (l *layout) bytesOf(gs []int) int64 {
	var n int64
	for _, g := range gs {
		_, _, size := l.bounds(g)
		n += int64(size)
	}
	return n
}
