package server

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

func TestCodecChunkPieceIsAGetChunksResponse(t *testing.T) {
	data := bytes.Repeat([]byte{0xab}, 70000)
	for _, p := range []struct {
		index  uint32
		offset uint64
		data   []byte
	}{{5, 5 << 20, data}, {0, 0, data[:1]}, {1<<32 - 1, 1 << 40, nil}} {
		buf := mem.SliceBuffer(bytes.Clone(p.data))
		wire, err := newCodec(nil).Marshal(&chunkPiece{index: p.index, offset: p.offset, data: buf})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.data) > 0 && len(wire) != 2 {
			t.Errorf("%d buffers, want header and data: the data was copied", len(wire))
		}
		var got shoalv1.GetChunksResponse
		if err := proto.Unmarshal(wire.Materialize(), &got); err != nil {
			t.Fatal(err)
		}
		if got.Index != p.index || got.Offset != p.offset || !bytes.Equal(got.Data, p.data) {
			t.Errorf("decoded %d %d (%d bytes), want %d %d (%d bytes)", got.Index, got.Offset, len(got.Data), p.index, p.offset, len(p.data))
		}
		wire.Free()
	}
}
