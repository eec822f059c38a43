package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// pattern returns n bytes of i%251, the input of the known vectors below.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// The ids below were computed by an independent Python implementation of
// the scheme in ComputeID and MerkleRoot (hashlib, struct, base64).
func TestKnownVectors(t *testing.T) {
	cases := []struct {
		size      int
		id        string
		chunkSize int
		chunks    int
	}{
		{0, "sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyca", 16384, 0},
		{1, "sh17mmp7ju3ic2mrfhtrs4vsa7q3rguenb6s4oiml3wzttmdbcmikdq", 16384, 1},
		{16384, "sh1a5sduikkrv35yttnnasxwifjnbuv7if2z5bcrva2zoxnc6o4fb6q", 16384, 1},
		{16385, "sh1bwvibd2s5ylwlv3ubcz7yu4q5vmbe2za762zkyf4b23azzfojpeq", 16384, 2},
		{100000, "sh1rdorova3glivm7atf645ypbgiuv4ndzp7bz32g4cnnenxulxusoa", 16384, 7},
		{1 << 20, "sh1ik6rqnfy5a4hmmrmf4yjyee4i362xl3ubritaf6g472yfh2ahzwq", 16384, 64},
		{3<<20 + 7, "sh1ntoupgbbbfvuajrc7fjrtn2h6jsvzfzdncz2tqhj7qv2jvihrbdq", 65536, 49},
	}
	for _, c := range cases {
		m, err := HashReaderAt(context.Background(), bytes.NewReader(pattern(c.size)), int64(c.size), 3)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID.String() != c.id || m.ChunkSize != c.chunkSize || m.NumChunks() != c.chunks {
			t.Errorf("size %d: got %s, %d chunks of %d; want %s, %d of %d", c.size, m.ID, m.NumChunks(), m.ChunkSize, c.id, c.chunks, c.chunkSize)
		}
		id, err := ParseID(c.id)
		if err != nil || id != m.ID {
			t.Errorf("ParseID(%s) = %s, %v", c.id, id, err)
		}
		if err := m.Verify(id); err != nil {
			t.Errorf("size %d: Verify: %v", c.size, err)
		}
	}
}

func TestChunkSizeFor(t *testing.T) {
	cases := []struct {
		size      int64
		chunkSize int
		minChunks int64
	}{
		{800_000, 16 << 10, 24},
		{1 << 30, 1 << 20, 1024},
		{256 << 20, 1 << 20, 256},
		{64 << 20, 1 << 20, 64},
		{10 << 20, 256 << 10, 40},
	}
	for _, c := range cases {
		got := ChunkSizeFor(c.size)
		n := (c.size + int64(got) - 1) / int64(got)
		if got != c.chunkSize || n < c.minChunks {
			t.Errorf("ChunkSizeFor(%d) = %d (%d chunks), want %d (at least %d chunks)", c.size, got, n, c.chunkSize, c.minChunks)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	for _, s := range []string{"", "sh1", "xx1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyca", "sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyc", "sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gty01", "../../etc/passwd"} {
		if _, err := ParseID(s); !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q) = %v, want ErrBadID", s, err)
		}
	}
}

func TestVerifyRejectsTamperedManifest(t *testing.T) {
	data := pattern(100000)
	m, err := HashReaderAt(context.Background(), bytes.NewReader(data), int64(len(data)), 1)
	if err != nil {
		t.Fatal(err)
	}
	id := m.ID
	tampered := []func(*Manifest){
		func(m *Manifest) { m.Hashes[3][0] ^= 1 },
		func(m *Manifest) { m.Size-- },
		func(m *Manifest) { m.ChunkSize = 1 << 21 },
		func(m *Manifest) { m.Hashes = m.Hashes[:len(m.Hashes)-1] },
		func(m *Manifest) { m.ChunkSize = 0 },
	}
	for i, f := range tampered {
		c := *m
		c.Hashes = append([]Hash(nil), m.Hashes...)
		f(&c)
		if err := c.Verify(id); !errors.Is(err, ErrBadManifest) {
			t.Errorf("tamper %d: Verify = %v, want ErrBadManifest", i, err)
		}
	}
	if err := m.VerifyChunk(6, data[6*16384:]); err != nil {
		t.Errorf("short last chunk: %v", err)
	}
	if err := m.VerifyChunk(0, data[1:16385]); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("shifted chunk: %v", err)
	}
	if err := m.VerifyChunk(7, nil); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("chunk past end: %v", err)
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyca")
	f.Add("SH1MCGZ7WP7H7ZLMSRPH7GYV2VZKKZF3DBDNKGJ63TKV5JPZZ7GTYCA")
	f.Add("sh1")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("round trip of %q: %s, %v", s, back, err)
		}
	})
}
