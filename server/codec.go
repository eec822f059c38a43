package server

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// chunkPiece is a GetChunksResponse whose data is a pooled buffer handed to
// the transport as it is: the codec writes only the few header bytes, so
// chunk bytes are not copied into a marshal buffer. The transport frees
// data once it is on the wire; the sender must not touch it after Send.
type chunkPiece struct {
	index  uint32
	offset uint64
	data   mem.Buffer
}

// GetChunksResponse field numbers, read from the generated descriptor so
// they follow proto/shoal/v1/peer.proto.
var (
	chunkFields = (&shoalv1.GetChunksResponse{}).ProtoReflect().Descriptor().Fields()
	fieldIndex  = chunkFields.ByName("index").Number()
	fieldOffset = chunkFields.ByName("offset").Number()
	fieldData   = chunkFields.ByName("data").Number()
)

// codec is the proto codec, except that a *chunkPiece is encoded as a
// GetChunksResponse without copying its data. Every other message, and
// every message received, goes to grpc's proto codec.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(proto.Name)} }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	p, ok := v.(*chunkPiece)
	if !ok {
		return c.proto.Marshal(v)
	}
	hdr := make([]byte, 0, 32)
	if p.index != 0 {
		hdr = protowire.AppendTag(hdr, fieldIndex, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(p.index))
	}
	if p.offset != 0 {
		hdr = protowire.AppendTag(hdr, fieldOffset, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, p.offset)
	}
	if p.data.Len() == 0 {
		p.data.Free()
		return mem.BufferSlice{mem.SliceBuffer(hdr)}, nil
	}
	hdr = protowire.AppendTag(hdr, fieldData, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(p.data.Len()))
	return mem.BufferSlice{mem.SliceBuffer(hdr), p.data}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is "proto": on the wire nothing changes.
func (codec) Name() string { return proto.Name }
