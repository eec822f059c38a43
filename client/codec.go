package client

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// chunkMsg is a GetChunksResponse received without copying its data: it
// keeps a reference to the buffers the transport read the message into,
// and its data is the part of them after the header. free returns them.
type chunkMsg struct {
	index  uint32
	file   uint32 // position of the chunk's file in the request's files
	offset uint64
	bufs   mem.BufferSlice // the whole message, one reference each
	skip   int             // header bytes before data in bufs
	size   int             // data bytes
}

// pieces appends the data, in order, to dst: one slice per received
// buffer (an HTTP/2 frame, 16 KiB by default).
func (m *chunkMsg) pieces(dst [][]byte) [][]byte {
	skip, left := m.skip, m.size
	for _, b := range m.bufs {
		if left == 0 {
			break
		}
		d := b.ReadOnlyData()
		if skip >= len(d) {
			skip -= len(d)
			continue
		}
		d = d[skip:]
		skip = 0
		d = d[:min(len(d), left)]
		left -= len(d)
		dst = append(dst, d)
	}
	return dst
}

func (m *chunkMsg) free() {
	m.bufs.Free()
	m.bufs = nil
}

// GetChunksResponse field numbers, read from the generated descriptor so
// they follow proto/shoal/v1/peer.proto.
var (
	chunkFields = (&shoalv1.GetChunksResponse{}).ProtoReflect().Descriptor().Fields()
	fieldIndex  = chunkFields.ByName("index").Number()
	fieldOffset = chunkFields.ByName("offset").Number()
	fieldData   = chunkFields.ByName("data").Number()
	fieldFile   = chunkFields.ByName("file").Number()
)

// chunkCodec is grpc's proto codec, except that a *chunkMsg is decoded
// in place: the few header bytes are parsed and the data is left in the
// received buffers. A message in any other layout than index, offset,
// file, then data last (which every proto encoder produces) is decoded by the
// proto codec and copied.
type chunkCodec struct{ proto encoding.CodecV2 }

func newChunkCodec() chunkCodec { return chunkCodec{proto: encoding.GetCodecV2(proto.Name)} }

func (c chunkCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c chunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*chunkMsg)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if c.inPlace(data, m) {
		data.Ref()
		m.bufs = data
		return nil
	}
	var w shoalv1.GetChunksResponse
	if err := c.proto.Unmarshal(data, &w); err != nil {
		return err
	}
	*m = chunkMsg{index: w.GetIndex(), file: w.GetFile(), offset: w.GetOffset(), bufs: mem.BufferSlice{mem.SliceBuffer(w.GetData())}, size: len(w.GetData())}
	return nil
}

// inPlace parses the header of a message laid out as index, offset, file,
// data (each optional, data last) and fills m's fields but bufs.
func (chunkCodec) inPlace(data mem.BufferSlice, m *chunkMsg) bool {
	var head [32]byte
	h := head[:0]
	for _, b := range data {
		h = append(h, b.ReadOnlyData()[:min(b.Len(), cap(h)-len(h))]...)
		if len(h) == cap(h) {
			break
		}
	}
	total := data.Len()
	*m = chunkMsg{}
	for pos := 0; pos < total; {
		if pos >= len(h) {
			return false
		}
		num, typ, n := protowire.ConsumeTag(h[pos:])
		if n < 0 {
			return false
		}
		v, k := protowire.ConsumeVarint(h[pos+n:])
		if k < 0 {
			return false
		}
		switch {
		case num == fieldIndex && typ == protowire.VarintType:
			m.index = uint32(v)
		case num == fieldOffset && typ == protowire.VarintType:
			m.offset = v
		case num == fieldFile && typ == protowire.VarintType:
			m.file = uint32(v)
		case num == fieldData && typ == protowire.BytesType:
			if v > uint64(total) {
				return false
			}
			m.skip, m.size = pos+n+k, int(v)
			return m.skip+m.size == total
		default:
			return false
		}
		pos += n + k
	}
	return true
}

// Name is "proto": on the wire nothing changes.
func (chunkCodec) Name() string { return proto.Name }
