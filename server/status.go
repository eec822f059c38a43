package server

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
)

// Errors of the server's own validation. Handlers wrap them with detail.
var (
	errInvalid   = errors.New("invalid request")
	errTooLarge  = errors.New("request too large")
	errBusy      = errors.New("serving as many downloads as allowed")
	errFull      = errors.New("registry full")
	errAmbiguous = errors.New("name matches several files")
	errNotOwner  = errors.New("peer id registered with another address")
)

// reasonDomain is the ErrorInfo domain of the reasons below: clients read
// the reason where one code has several meanings (NotFound: the file, or
// one chunk of a partial holder; Unavailable: a rehash, or the network).
const reasonDomain = "shoal.v1"

// statusTable maps domain errors to gRPC codes and reasons. The first
// match wins. The client's mirror is client/failure.go.
var statusTable = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{chunkstore.ErrChunkNotHeld, codes.NotFound, "CHUNK_NOT_HELD"},
	{chunkstore.ErrNotFound, codes.NotFound, "FILE_NOT_FOUND"},
	{chunkstore.ErrOutOfRange, codes.OutOfRange, "OUT_OF_RANGE"},
	{chunkstore.ErrBadID, codes.InvalidArgument, "BAD_ID"},
	{chunkstore.ErrChanged, codes.Unavailable, "FILE_CHANGED"},
	{chunkstore.ErrNotReady, codes.Unavailable, "NOT_READY"},
	{errInvalid, codes.InvalidArgument, "INVALID"},
	{errTooLarge, codes.ResourceExhausted, "TOO_LARGE"},
	{errBusy, codes.ResourceExhausted, "BUSY"},
	{errFull, codes.ResourceExhausted, "REGISTRY_FULL"},
	{errAmbiguous, codes.FailedPrecondition, "AMBIGUOUS"},
	{errNotOwner, codes.PermissionDenied, "NOT_OWNER"},
	{context.Canceled, codes.Canceled, ""},
	{context.DeadlineExceeded, codes.DeadlineExceeded, ""},
}

// toStatus turns a domain error into a gRPC status error carrying the
// error's text and, for shoal's own errors, an ErrorInfo reason. Errors
// that already are statuses pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, row := range statusTable {
		if !errors.Is(err, row.err) {
			continue
		}
		st := status.New(row.code, err.Error())
		if row.reason != "" {
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: row.reason, Domain: reasonDomain}); derr == nil {
				st = d
			}
		}
		return st.Err()
	}
	return status.Error(codes.Internal, err.Error())
}
