package client

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// split cuts b into buffers at every step bytes, as the transport hands a
// message over in HTTP/2 frames.
func split(b []byte, step int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(step, len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

// decodeChunk decodes msg with the chunk codec and returns the fields and
// the data joined.
func decodeChunk(t testing.TB, msg []byte, step int) (uint32, uint64, []byte, error) {
	var m chunkMsg
	if err := newChunkCodec().Unmarshal(split(msg, step), &m); err != nil {
		return 0, 0, nil, err
	}
	defer m.free()
	return m.index, m.offset, bytes.Join(m.pieces(nil), nil), nil
}

func TestChunkCodecInPlace(t *testing.T) {
	data := bytes.Repeat([]byte("chunk bytes "), 5000)
	cases := []struct {
		name string
		msg  *shoalv1.GetChunksResponse
	}{
		{"all fields", &shoalv1.GetChunksResponse{Index: 7, Offset: 7 << 20, Data: data}},
		{"chunk zero", &shoalv1.GetChunksResponse{Data: data}},
		{"no data", &shoalv1.GetChunksResponse{Index: 3, Offset: 99}},
		{"large index", &shoalv1.GetChunksResponse{Index: 1<<32 - 1, Offset: 1<<63 + 5, Data: data[:1]}},
	}
	for _, tc := range cases {
		wire, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []int{1, 7, 16 << 10, len(wire) + 1} {
			var m chunkMsg
			if !(chunkCodec{}).inPlace(split(wire, step), &m) {
				t.Errorf("%s, %d-byte buffers: not decoded in place", tc.name, step)
			}
			i, off, got, err := decodeChunk(t, wire, step)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if i != tc.msg.Index || off != tc.msg.Offset || !bytes.Equal(got, tc.msg.Data) {
				t.Errorf("%s, %d-byte buffers: got index %d offset %d and %d bytes", tc.name, step, i, off, len(got))
			}
		}
	}
}

func TestChunkCodecOtherLayouts(t *testing.T) {
	// Data before index, and an unknown field: legal proto that takes the
	// copying path and still decodes right.
	var wire []byte
	wire = protowire.AppendTag(wire, fieldData, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte("payload"))
	wire = protowire.AppendTag(wire, fieldIndex, protowire.VarintType)
	wire = protowire.AppendVarint(wire, 4)
	wire = protowire.AppendTag(wire, 9, protowire.VarintType)
	wire = protowire.AppendVarint(wire, 1)
	var m chunkMsg
	if (chunkCodec{}).inPlace(split(wire, 4), &m) {
		t.Fatal("a message with data first was taken in place")
	}
	i, _, got, err := decodeChunk(t, wire, 4)
	if err != nil || i != 4 || string(got) != "payload" {
		t.Fatalf("got index %d, %q, %v; want 4, payload", i, got, err)
	}
	if _, _, _, err := decodeChunk(t, []byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1}, 3); err == nil {
		t.Fatal("a data field longer than the message decoded")
	}
}

// FuzzChunkCodec checks the in-place decoder against the proto decoder on
// any input and any buffer split.
func FuzzChunkCodec(f *testing.F) {
	for _, msg := range []*shoalv1.GetChunksResponse{{Index: 1, Offset: 1 << 20, Data: []byte("abc")}, {}, {Data: make([]byte, 300)}} {
		b, _ := proto.Marshal(msg)
		f.Add(b, uint16(5))
	}
	f.Fuzz(func(t *testing.T, wire []byte, step uint16) {
		var want shoalv1.GetChunksResponse
		werr := proto.Unmarshal(wire, &want)
		i, off, got, err := decodeChunk(t, wire, int(step%64)+1)
		if (err != nil) != (werr != nil) {
			t.Fatalf("chunk codec error %v, proto error %v", err, werr)
		}
		if err == nil && (i != want.Index || off != want.Offset || !bytes.Equal(got, want.Data)) {
			t.Fatalf("chunk codec gave %d %d %x, proto %d %d %x", i, off, got, want.Index, want.Offset, want.Data)
		}
	})
}
