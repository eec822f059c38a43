package chunkstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"
)

// A tree describes a folder: its files (each by content id) and its empty
// folders, with relative paths, in one canonical order, under a content id
// of its own. Tree ids and file ids are hashed in different domains and
// written with different prefixes ("st1" against "sh1"), so one can never
// pass for the other.

// ErrBadTree: a tree or one of its entries is malformed.
var ErrBadTree = errors.New("malformed tree")

const (
	// treePrefix starts the text form of every tree id.
	treePrefix = "st1"
	// MaxPathBytes bounds an entry's path, and maxElemBytes each of its
	// elements (what common file systems hold).
	MaxPathBytes = 4096
	maxElemBytes = 255
)

// TreeID is a tree's content address.
type TreeID Hash

// String returns the id's text form: "st1" and 52 base32 letters.
func (id TreeID) String() string { return treePrefix + idEncoding.EncodeToString(id[:]) }

// ParseTreeID reads the text form written by TreeID.String.
func ParseTreeID(s string) (TreeID, error) {
	h, err := parseHashText(treePrefix, s)
	return TreeID(h), err
}

// TreeEntry is one entry of a tree: a file, or a folder that holds no file
// (a folder holding files is implied by their paths).
type TreeEntry struct {
	Path       string // relative, '/'-separated, canonical (see ValidPath)
	Dir        bool   // an empty folder: no size, no file id
	Size       int64  // the file's length in bytes
	File       ID     // the file's content id
	Executable bool   // the file's mode has an execute bit
}

// Tree is a folder's entries in canonical order (by path, bytewise) and
// its id.
type Tree struct {
	Entries []TreeEntry
	ID      TreeID
}

// ValidPath checks a tree entry's path: relative, '/'-separated, no empty,
// "." or ".." element, no NUL, backslash or other control character, valid
// UTF-8, at most MaxPathBytes, each element at most 255 bytes. Nothing a
// valid path names can lie outside the folder it is written into.
func ValidPath(p string) error {
	switch {
	case p == "" || len(p) > MaxPathBytes:
		return fmt.Errorf("%w: path %s: empty or over %d bytes", ErrBadTree, Clip(p), MaxPathBytes)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: path %s: not UTF-8", ErrBadTree, Clip(p))
	case !fs.ValidPath(p) || p == ".":
		return fmt.Errorf("%w: path %s: absolute, or with an empty, . or .. element", ErrBadTree, Clip(p))
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("%w: path %s: control character or backslash", ErrBadTree, Clip(p))
		}
	}
	for elem := range strings.SplitSeq(p, "/") {
		if len(elem) > maxElemBytes {
			return fmt.Errorf("%w: path %s: an element over %d bytes", ErrBadTree, Clip(p), maxElemBytes)
		}
	}
	return nil
}

// Validate checks every entry and the tree's shape: canonical order, no
// path twice, no file that is also a folder (a file's path as a prefix of
// another path), folders without size or id.
func (t *Tree) Validate() error {
	files, dirs := map[string]bool{}, map[string]bool{}
	for k, e := range t.Entries {
		if err := ValidPath(e.Path); err != nil {
			return fmt.Errorf("entry %d: %w", k, err)
		}
		if k > 0 {
			switch prev := t.Entries[k-1].Path; {
			case prev == e.Path:
				return fmt.Errorf("%w: entry %d: path %s twice", ErrBadTree, k, Clip(e.Path))
			case prev > e.Path:
				return fmt.Errorf("%w: entry %d: %s out of order", ErrBadTree, k, Clip(e.Path))
			}
		}
		if e.Dir && (e.Size != 0 || e.File != (ID{}) || e.Executable) {
			return fmt.Errorf("%w: entry %d: folder %s with a size, id or mode", ErrBadTree, k, Clip(e.Path))
		}
		if e.Size < 0 || e.Size > maxManifestSize {
			return fmt.Errorf("%w: entry %d: size %d", ErrBadTree, k, e.Size)
		}
		// Any proper prefix of this path is a folder: it must not be a file.
		for i := strings.IndexByte(e.Path, '/'); i >= 0; i = nextSlash(e.Path, i) {
			if files[e.Path[:i]] {
				return fmt.Errorf("%w: entry %d: %s is a file and a folder", ErrBadTree, k, Clip(e.Path[:i]))
			}
			if dirs[e.Path[:i]] {
				return fmt.Errorf("%w: entry %d: %s is listed as an empty folder but holds %s", ErrBadTree, k, Clip(e.Path[:i]), Clip(e.Path))
			}
		}
		if e.Dir {
			dirs[e.Path] = true
		} else {
			files[e.Path] = true
		}
	}
	return nil
}

func nextSlash(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// Entry flags in the canonical encoding.
const (
	flagDir  = 1
	flagExec = 2
)

// Encode writes the tree's canonical encoding, the bytes its id is
// computed over: per entry, the path's length (uvarint) and bytes, a flag
// byte (1 folder, 2 executable), and for a file its size (uvarint) and
// 32-byte content id.
func (t *Tree) Encode() []byte {
	var b bytes.Buffer
	for _, e := range t.Entries {
		b.Write(binary.AppendUvarint(nil, uint64(len(e.Path))))
		b.WriteString(e.Path)
		var flags byte
		if e.Dir {
			flags |= flagDir
		}
		if e.Executable {
			flags |= flagExec
		}
		b.WriteByte(flags)
		if !e.Dir {
			b.Write(binary.AppendUvarint(nil, uint64(e.Size)))
			b.Write(e.File[:])
		}
	}
	return b.Bytes()
}

// ComputeTreeID hashes a tree's canonical encoding:
// SHA-256("shoal/v1 tree" || Encode()).
func ComputeTreeID(t *Tree) TreeID {
	h := sha256.New()
	h.Write([]byte("shoal/v1 tree"))
	h.Write(t.Encode())
	var id TreeID
	h.Sum(id[:0])
	return id
}

// Files is the number of file entries and their total size in bytes.
func (t *Tree) Files() (n int, size int64) {
	for _, e := range t.Entries {
		if !e.Dir {
			n++
			size += e.Size
		}
	}
	return n, size
}
