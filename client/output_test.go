package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalnet/shoal/chunkstore"
)

// sizeRecorder is a part file that records the size of every write.
type sizeRecorder struct {
	*os.File
	writes []int
}

func (r *sizeRecorder) WriteAt(p []byte, off int64) (int, error) {
	r.writes = append(r.writes, len(p))
	return r.File.WriteAt(p, off)
}

func TestOutputWritesInPieces(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	m := &chunkstore.Manifest{Size: int64(len(data)), ChunkSize: len(data)}
	var rec *sizeRecorder
	cfg := Config{WriteSize: 48 << 10, OpenPart: func(p string) (PartFile, error) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		rec = &sizeRecorder{File: f}
		return rec, err
	}}.withDefaults()
	o, err := openOutput(context.Background(), filepath.Join(dir, "out"), m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	if err := o.write(data, 0); err != nil {
		t.Fatal(err)
	}
	if len(rec.writes) != (len(data)+cfg.WriteSize-1)/cfg.WriteSize {
		t.Errorf("%d writes for %d bytes in %d-byte pieces", len(rec.writes), len(data), cfg.WriteSize)
	}
	for _, n := range rec.writes {
		if n > cfg.WriteSize {
			t.Fatalf("a write of %d bytes, more than WriteSize %d", n, cfg.WriteSize)
		}
	}
	got, err := os.ReadFile(o.part)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("part file differs from what was written")
	}
}
