package client_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// FuzzManifestFromWire feeds the client's manifest parsing and checking
// manifests built from fuzz bytes: no panic, and nothing accepted that
// does not hash to the id asked for.
func FuzzManifestFromWire(f *testing.F) {
	good := &shoalv1.Manifest{Name: "x", Size: 20000, ChunkSize: 16384, ChunkHashes: [][]byte{make([]byte, 32), make([]byte, 32)}}
	b, _ := proto.Marshal(good)
	f.Add(b)
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x18, 0x01})
	want := chunkstore.ComputeID(20000, 16384, make([]chunkstore.Hash, 2))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w shoalv1.Manifest
		if proto.Unmarshal(b, &w) != nil {
			return
		}
		m, err := client.ManifestFromWire(&w)
		if err != nil {
			return
		}
		if m.Verify(want) == nil && chunkstore.ComputeID(m.Size, m.ChunkSize, m.Hashes) != want {
			t.Fatal("accepted a manifest that does not hash to the id")
		}
	})
}
