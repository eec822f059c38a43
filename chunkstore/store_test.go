package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// newStore writes files into a new folder and returns a scanned store.
func newStore(t *testing.T, files map[string][]byte, index string) *Store {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return openScanned(t, dir, index)
}

func openScanned(t *testing.T, dir, index string) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, IndexPath: index})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s *Store, id ID) []byte {
	t.Helper()
	r, err := s.OpenChunks(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m := r.Manifest()
	buf := make([]byte, m.ChunkSize)
	var out []byte
	for i := range m.NumChunks() {
		b, err := r.ReadChunk(i, buf)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if err := m.VerifyChunk(i, b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestChunksMatchFileAtEveryBoundary(t *testing.T) {
	files := map[string][]byte{
		"empty":         {},
		"one-byte":      pattern(1),
		"exact-chunk":   pattern(MinChunkSize),
		"chunk-plus-1":  pattern(MinChunkSize + 1),
		"short-last":    pattern(5*MinChunkSize + 123),
		"sub/dir/multi": pattern(3<<20 + 7),
	}
	s := newStore(t, files, "")
	if got := len(s.List()); got != len(files) {
		t.Fatalf("List has %d files, want %d", got, len(files))
	}
	for name, data := range files {
		m, err := s.ManifestByName(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.Size != int64(len(data)) || m.Name != name {
			t.Errorf("%s: manifest says %q size %d", name, m.Name, m.Size)
		}
		if got := readAll(t, s, m.ID); !bytes.Equal(got, data) {
			t.Errorf("%s: chunks differ from the file", name)
		}
		r, err := s.OpenChunks(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ReadChunk(m.NumChunks(), make([]byte, m.ChunkSize)); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%s: chunk past the end: %v", name, err)
		}
		r.Close()
	}
}

func TestNamesOutsideTheFolderAreNotFound(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ok"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), []byte("h"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openScanned(t, dir, "")
	for _, name := range []string{"../../etc/passwd", "/etc/passwd", secret, "link", "linkdir/secret", "./ok", "ok/", ".hidden", "", "."} {
		if _, err := s.ManifestByName(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("ManifestByName(%q) = %v, want ErrNotFound", name, err)
		}
	}
	if got := len(s.List()); got != 1 {
		t.Errorf("List has %d files, want only ok", got)
	}
}

func TestChangedFileIsNotServedStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	old := pattern(4 * MinChunkSize)
	if err := os.WriteFile(p, old, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openScanned(t, dir, "")
	m, err := s.ManifestByName("f")
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenChunks(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Same size, new bytes in one chunk, written in place.
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xEE}, 100), int64(2*MinChunkSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, err := r.ReadChunk(2, make([]byte, m.ChunkSize)); !errors.Is(err, ErrChanged) {
		t.Fatalf("read after change = %d bytes, %v; want ErrChanged", len(b), err)
	}
	if _, err := s.Manifest(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("old manifest still offered: %v", err)
	}
	if _, err := s.OpenChunks(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("old id still opens: %v", err)
	}
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	m2, err := s.ManifestByName("f")
	if err != nil {
		t.Fatal(err)
	}
	if m2.ID == m.ID {
		t.Fatal("rescan kept the stale id")
	}
	want, _ := os.ReadFile(p)
	if got := readAll(t, s, m2.ID); !bytes.Equal(got, want) {
		t.Error("rehashed file serves wrong bytes")
	}
}

func TestRestartReusesIndex(t *testing.T) {
	dir := t.TempDir()
	index := filepath.Join(t.TempDir(), "index")
	for _, name := range []string{"a", "b", "c"} {
		if err := os.WriteFile(filepath.Join(dir, name), pattern(50000+len(name)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first := openScanned(t, dir, index)
	if first.Hashed() != 3 {
		t.Fatalf("first start hashed %d files, want 3", first.Hashed())
	}
	ma, _ := first.ManifestByName("a")
	if err := os.WriteFile(filepath.Join(dir, "b"), pattern(7), 0o644); err != nil {
		t.Fatal(err)
	}
	second := openScanned(t, dir, index)
	if second.Hashed() != 1 {
		t.Errorf("restart hashed %d files, want only the changed one", second.Hashed())
	}
	if m, err := second.ManifestByName("a"); err != nil || m.ID != ma.ID {
		t.Errorf("index entry for a: %v, %v", m, err)
	}
	if m, err := second.ManifestByName("b"); err != nil || m.Size != 7 {
		t.Errorf("changed file b: %v, %v", m, err)
	}
	if err := os.WriteFile(index, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if third := openScanned(t, dir, index); third.Hashed() != 3 {
		t.Errorf("with a corrupt index hashed %d files, want 3", third.Hashed())
	}
}

func TestRemovedFileIsDropped(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gone")
	if err := os.WriteFile(p, pattern(10), 0o644); err != nil {
		t.Fatal(err)
	}
	s := openScanned(t, dir, "")
	m, _ := s.ManifestByName("gone")
	os.Remove(p)
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Manifest(m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed file still listed: %v", err)
	}
}
