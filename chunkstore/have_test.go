package chunkstore

import (
	"bytes"
	"slices"
	"testing"
)

func TestHaveRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 64, 1000} {
		have := make([]bool, n)
		for i := range have {
			have[i] = i%3 == 0 || i == n-1
		}
		got, err := UnpackHave(PackHave(have), n)
		if err != nil || !slices.Equal(got, have) {
			t.Errorf("n=%d: %v %v", n, got, err)
		}
	}
	if _, err := UnpackHave([]byte{0xff}, 9); err == nil {
		t.Error("a bitmap one byte short was accepted")
	}
	if _, err := UnpackHave([]byte{0x80}, 7); err == nil {
		t.Error("a bit past the last chunk was accepted")
	}
}

func FuzzUnpackHave(f *testing.F) {
	f.Add([]byte{0x01}, 3)
	f.Add([]byte{0xff, 0x7f}, 15)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n > 1<<20 {
			return
		}
		have, err := UnpackHave(b, n)
		if err != nil {
			return
		}
		if again := PackHave(have); !bytes.Equal(again, b) {
			t.Fatalf("%x unpacked and packed as %x", b, again)
		}
	})
}

func TestNewManifestRoundTrip(t *testing.T) {
	m := &Manifest{Name: "a/b", Size: 3<<20 + 5, ChunkSize: 1 << 20}
	for i := range 4 {
		m.Hashes = append(m.Hashes, Hash{byte(i), 1, 2})
	}
	m.ID = ComputeID(m.Size, m.ChunkSize, m.Hashes)
	got, err := NewManifest(m.Name, uint64(m.Size), uint32(m.ChunkSize), m.HashBytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(m.ID); err != nil || got.Name != m.Name || !slices.Equal(got.Hashes, m.Hashes) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, hashes := range map[string][][]byte{
		"one hash short": m.HashBytes()[:3],
		"short hash":     append(m.HashBytes()[:3], []byte{1, 2}),
	} {
		if _, err := NewManifest(m.Name, uint64(m.Size), uint32(m.ChunkSize), hashes); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
