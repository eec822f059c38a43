package chunkstore

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

const (
	// MinChunkSize is the smallest chunk size the store picks, in bytes.
	MinChunkSize = 16 << 10
	// MaxChunkSize is the largest chunk size the store picks and accepts, in
	// bytes: a chunk always fits one 1 MiB message.
	MaxChunkSize = 1 << 20
	// TargetChunks is the chunk count the store aims for, so that even a
	// small file fans out over several peers.
	TargetChunks = 64
	// HashSize is the length of a chunk digest and of a content id, in bytes.
	HashSize = sha256.Size
	// idPrefix starts the text form of every content id.
	idPrefix = "sh1"
)

// Errors returned by the package. Callers test them with errors.Is.
var (
	ErrNotFound     = errors.New("file not found")
	ErrOutOfRange   = errors.New("chunk index out of range")
	ErrBadID        = errors.New("malformed content id")
	ErrBadManifest  = errors.New("manifest does not match its content id")
	ErrChanged      = errors.New("file changed on disk since it was hashed")
	ErrHashMismatch = errors.New("chunk does not match its hash")
	ErrNotReady     = errors.New("file is still being hashed")
	// ErrChunkNotHeld: a partial holder has not verified this chunk yet;
	// unlike ErrNotFound it says nothing of the file's other chunks.
	ErrChunkNotHeld = errors.New("chunk not held yet")
)

// Hash is a SHA-256 digest.
type Hash [HashSize]byte

// ID is a file's content address.
type ID Hash

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// String returns the id's text form: "sh1" and 52 base32 letters.
func (id ID) String() string { return idPrefix + idEncoding.EncodeToString(id[:]) }

// ParseID reads the text form written by ID.String.
func ParseID(s string) (ID, error) {
	h, err := parseHashText(idPrefix, s)
	return ID(h), err
}

// parseHashText reads prefix and 52 base32 letters: the text form of a
// file's or a tree's id.
func parseHashText(prefix, s string) (Hash, error) {
	var h Hash
	rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(s)), prefix)
	if !ok || idEncoding.DecodedLen(len(rest)) != HashSize {
		return h, fmt.Errorf("%w: %s", ErrBadID, Clip(s))
	}
	b, err := idEncoding.DecodeString(rest)
	if err != nil || len(b) != HashSize {
		return h, fmt.Errorf("%w: %s", ErrBadID, Clip(s))
	}
	copy(h[:], b)
	return h, nil
}

// Manifest describes one file as fixed-size chunks.
type Manifest struct {
	Name      string // path relative to the shared folder, '/'-separated
	Size      int64  // file length in bytes
	ChunkSize int    // length of every chunk but the last, in bytes
	Hashes    []Hash // one SHA-256 per chunk
	ID        ID     // content address over Size, ChunkSize and Hashes
}

// ChunkSizeFor picks the chunk size for a file of size bytes: the power of
// two nearest above size/TargetChunks, kept within [MinChunkSize,
// MaxChunkSize]. An 800 KB file gets 50 chunks of 16 KiB, a 1 GiB file 1024
// chunks of 1 MiB.
func ChunkSizeFor(size int64) int {
	want := (size + TargetChunks - 1) / TargetChunks
	if want <= MinChunkSize {
		return MinChunkSize
	}
	if want >= MaxChunkSize {
		return MaxChunkSize
	}
	return 1 << bits.Len64(uint64(want-1))
}

// NumChunks is the number of chunks in the file.
func (m *Manifest) NumChunks() int { return len(m.Hashes) }

// ChunkBounds returns the byte offset and length of chunk i.
func (m *Manifest) ChunkBounds(i int) (off int64, n int) {
	off = int64(i) * int64(m.ChunkSize)
	return off, int(min(int64(m.ChunkSize), m.Size-off))
}

// Verify checks that the manifest's shape is consistent and that it hashes
// to want. Use it on every manifest that came over the network.
func (m *Manifest) Verify(want ID) error {
	if m.Size < 0 || m.ChunkSize < 1 || m.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: size %d, chunk size %d", ErrBadManifest, m.Size, m.ChunkSize)
	}
	if n := (m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize); n != int64(len(m.Hashes)) {
		return fmt.Errorf("%w: %d chunk hashes for %d chunks", ErrBadManifest, len(m.Hashes), n)
	}
	if got := ComputeID(m.Size, m.ChunkSize, m.Hashes); got != want {
		return fmt.Errorf("%w: it hashes to %s, want %s", ErrBadManifest, got, want)
	}
	m.ID = want
	return nil
}

// VerifyChunk reports whether data is chunk i of the file.
func (m *Manifest) VerifyChunk(i int, data []byte) error {
	if i < 0 || i >= len(m.Hashes) {
		return fmt.Errorf("chunk %d of %d: %w", i, len(m.Hashes), ErrOutOfRange)
	}
	if _, n := m.ChunkBounds(i); n != len(data) || sha256.Sum256(data) != m.Hashes[i] {
		return fmt.Errorf("chunk %d: %w", i, ErrHashMismatch)
	}
	return nil
}

// VerifyPieces is VerifyChunk for a chunk held in several pieces, in order.
func (m *Manifest) VerifyPieces(i int, pieces [][]byte) error {
	if i < 0 || i >= len(m.Hashes) {
		return fmt.Errorf("chunk %d of %d: %w", i, len(m.Hashes), ErrOutOfRange)
	}
	h := sha256.New()
	n := 0
	for _, p := range pieces {
		h.Write(p)
		n += len(p)
	}
	var sum Hash
	if _, want := m.ChunkBounds(i); n != want || Hash(h.Sum(sum[:0])) != m.Hashes[i] {
		return fmt.Errorf("chunk %d: %w", i, ErrHashMismatch)
	}
	return nil
}

// ComputeID hashes a file's shape and chunk digests into its content id:
// SHA-256("shoal/v1 file" || size (8 bytes BE) || chunk size (4 bytes BE) ||
// MerkleRoot(hashes)).
func ComputeID(size int64, chunkSize int, hashes []Hash) ID {
	h := sha256.New()
	h.Write([]byte("shoal/v1 file"))
	var buf [12]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(size))
	binary.BigEndian.PutUint32(buf[8:], uint32(chunkSize))
	h.Write(buf[:])
	root := MerkleRoot(hashes)
	h.Write(root[:])
	var id ID
	h.Sum(id[:0])
	return id
}

// MerkleRoot is the root of a binary hash tree over leaves: an inner node is
// SHA-256(0x01 || left || right), a node without a sibling moves up
// unchanged, and the root of no leaves is SHA-256 of nothing.
func MerkleRoot(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return sha256.Sum256(nil)
	}
	level := append([]Hash(nil), leaves...)
	var buf [1 + 2*HashSize]byte
	buf[0] = 1
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 == len(level) {
				next = append(next, level[i])
				continue
			}
			copy(buf[1:], level[i][:])
			copy(buf[1+HashSize:], level[i+1][:])
			next = append(next, sha256.Sum256(buf[:]))
		}
		level = next
	}
	return level[0]
}

// maxManifestSize bounds the file size a manifest may describe, in bytes:
// 1 PiB, far past any disk, so that sizes never overflow.
const maxManifestSize = 1 << 50

// NewManifest builds a manifest from its parts as a peer sent them,
// checking the sizes and the length of every hash. It does not set ID:
// Verify the manifest against the content id asked for before use.
func NewManifest(name string, size uint64, chunkSize uint32, hashes [][]byte) (*Manifest, error) {
	if chunkSize == 0 || chunkSize > MaxChunkSize || size > maxManifestSize {
		return nil, fmt.Errorf("%w: size %d, chunk size %d", ErrBadManifest, size, chunkSize)
	}
	if want := (size + uint64(chunkSize) - 1) / uint64(chunkSize); uint64(len(hashes)) != want {
		return nil, fmt.Errorf("%w: %d chunk hashes for %d chunks", ErrBadManifest, len(hashes), want)
	}
	m := &Manifest{Name: name, Size: int64(size), ChunkSize: int(chunkSize), Hashes: make([]Hash, len(hashes))}
	for i, h := range hashes {
		if len(h) != HashSize {
			return nil, fmt.Errorf("%w: chunk hash %d is %d bytes", ErrBadManifest, i, len(h))
		}
		copy(m.Hashes[i][:], h)
	}
	return m, nil
}

// HashBytes returns the chunk hashes as byte slices sharing m's memory:
// the wire form of the hash list.
func (m *Manifest) HashBytes() [][]byte {
	out := make([][]byte, len(m.Hashes))
	for i := range m.Hashes {
		out[i] = m.Hashes[i][:]
	}
	return out
}

// WireBytes bounds the encoded size of the manifest of a file of size
// bytes, with a name of at most 4 KiB: 34 bytes per chunk hash at the
// chunk size the store picks, plus the envelope.
func WireBytes(size int64) int {
	if size < 0 {
		size = 0
	}
	chunks := (size + int64(ChunkSizeFor(size)) - 1) / int64(ChunkSizeFor(size))
	return int(chunks)*(HashSize+2) + 8<<10
}

// clipLen is how much of a name or id from the network an error quotes.
const clipLen = 64

// Clip quotes s for an error or a log line, cut to its first 64 bytes
// with its length said: a peer's 1 MB name never becomes a 1 MB message.
func Clip(s string) string {
	if len(s) <= clipLen {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:clipLen], len(s))
}
