package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalnet/shoal/chunkstore"
)

// sizeRecorder is a part file without a descriptor that records the size
// of every write.
type sizeRecorder struct {
	f      *os.File
	writes []int
}

func (r *sizeRecorder) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r *sizeRecorder) Truncate(n int64) error                  { return r.f.Truncate(n) }
func (r *sizeRecorder) Sync() error                             { return r.f.Sync() }
func (r *sizeRecorder) Close() error                            { return r.f.Close() }
func (r *sizeRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, len(p))
	return r.f.WriteAt(p, off)
}

// cut splits data into pieces of the given sizes, the last taking the rest.
func cut(data []byte, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, data[:n])
		data = data[n:]
	}
	return append(out, data)
}

func TestOutputWritesInPieces(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	pieces := cut(data, 1000, 70000, 16384, 16384, 5, 200000)
	m := &chunkstore.Manifest{Size: int64(len(data)), ChunkSize: len(data)}
	for _, vectored := range []bool{false, true} {
		var rec *sizeRecorder
		cfg := Config{WriteSize: 48 << 10, OpenPart: func(p string) (PartFile, error) {
			f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if vectored {
				return f, err
			}
			rec = &sizeRecorder{f: f}
			return rec, err
		}}.withDefaults()
		o, err := openOutput(context.Background(), filepath.Join(t.TempDir(), "out"), m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.write(pieces, 0); err != nil {
			t.Fatal(err)
		}
		if rec != nil {
			total := 0
			for _, n := range rec.writes {
				if n > cfg.WriteSize {
					t.Fatalf("a write of %d bytes, more than WriteSize %d", n, cfg.WriteSize)
				}
				total += n
			}
			if total != len(data) {
				t.Fatalf("wrote %d bytes of %d", total, len(data))
			}
		}
		got, err := os.ReadFile(o.part)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("vectored %v: part file differs from what was written", vectored)
		}
		o.close()
	}
}

func TestOutputDirectWrites(t *testing.T) {
	const chunk = 64 << 10
	data := bytes.Repeat([]byte("direct io "), 30000) // 300,000 bytes: a short last chunk
	m := &chunkstore.Manifest{Size: int64(len(data)), ChunkSize: chunk}
	path := filepath.Join(t.TempDir(), "out")
	o, err := openOutput(context.Background(), path, m, Config{Direct: true}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	direct := o.direct.Load() != nil
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		// Pieces as the transport hands them over: unaligned slices.
		if err := o.write(cut(data[off:end], 1000, 16384), int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if direct && o.direct.Load() == nil {
		t.Fatal("O_DIRECT opened but writes fell back to the page cache")
	}
	t.Logf("direct writes: %v", direct)
	if err := o.commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("output differs (%d bytes, want %d): the padding of the last chunk must go", len(got), len(data))
	}
}
