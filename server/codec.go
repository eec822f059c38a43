package server

import (
	"context"
	"sync"

	protov2 "google.golang.org/protobuf/proto"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// chunkPiece is a GetChunksResponse whose data is a pooled buffer handed to
// the transport as it is: the codec writes only the few header bytes, so
// chunk bytes are not copied into a marshal buffer. The transport frees
// data once it is on the wire; the sender must not touch it after Send.
type chunkPiece struct {
	index  uint32
	file   uint32 // position of the chunk's file in the request's files
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
	fieldFile   = chunkFields.ByName("file").Number()
)

// codec is the proto codec, except that a *chunkPiece is encoded as a
// GetChunksResponse without copying its data. Every other message, and
// every message received, goes to grpc's proto codec.
type codec struct {
	proto encoding.CodecV2
	bad   *malformed // requests that failed to decode, for the interceptors
}

func newCodec(bad *malformed) codec { return codec{proto: encoding.GetCodecV2(proto.Name), bad: bad} }

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
	if p.file != 0 {
		// Before data, out of field order: the client reads a header
		// ending at data in place.
		hdr = protowire.AppendTag(hdr, fieldFile, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(p.file))
	}
	if p.data.Len() == 0 {
		p.data.Free()
		return mem.BufferSlice{mem.SliceBuffer(hdr)}, nil
	}
	hdr = protowire.AppendTag(hdr, fieldData, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(p.data.Len()))
	return mem.BufferSlice{mem.SliceBuffer(hdr), p.data}, nil
}

// Unmarshal decodes a request. A malformed one is not an error here:
// grpc-go would answer it INTERNAL; it is reset, recorded, and answered
// INVALID_ARGUMENT by the malformed interceptors.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.proto.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(protov2.Message)
	if !ok || c.bad == nil {
		return err
	}
	protov2.Reset(m)
	c.bad.m.Store(v, err)
	return nil
}

// malformed holds the requests the codec could not decode until the
// interceptors, which run right after decoding, answer them.
type malformed struct{ m sync.Map }

func (b *malformed) take(v any) error {
	if err, ok := b.m.LoadAndDelete(v); ok {
		return status.Errorf(codes.InvalidArgument, "malformed request: %v", err)
	}
	return nil
}

// unary answers a malformed unary request. grpc-go decodes it before any
// interceptor runs, so this one (second in the chain, after logging,
// which always goes on) always meets it.
func (b *malformed) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := b.take(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// stream answers a malformed message of a stream when it is received.
func (b *malformed) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, checkedStream{ss, b})
}

type checkedStream struct {
	grpc.ServerStream
	bad *malformed
}

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.bad.take(m)
}

// Name is "proto": on the wire nothing changes.
func (codec) Name() string { return proto.Name }
