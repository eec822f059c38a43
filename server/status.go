package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
)

// Errors of the server's own validation. Handlers wrap them with detail.
var (
	errInvalid   = errors.New("invalid request")
	errTooLarge  = errors.New("request too large")
	errFull      = errors.New("registry full")
	errAmbiguous = errors.New("name matches several files")
	errNotOwner  = errors.New("peer id registered with another address")
)

// statusTable maps domain errors to gRPC codes. The first match wins.
var statusTable = []struct {
	err  error
	code codes.Code
}{
	{chunkstore.ErrNotFound, codes.NotFound},
	{chunkstore.ErrOutOfRange, codes.OutOfRange},
	{chunkstore.ErrBadID, codes.InvalidArgument},
	{chunkstore.ErrChanged, codes.Unavailable},
	{chunkstore.ErrNotReady, codes.Unavailable},
	{errInvalid, codes.InvalidArgument},
	{errTooLarge, codes.ResourceExhausted},
	{errFull, codes.ResourceExhausted},
	{errAmbiguous, codes.FailedPrecondition},
	{errNotOwner, codes.PermissionDenied},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus turns a domain error into a gRPC status error carrying the
// error's text. Errors that already are statuses pass through.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, row := range statusTable {
		if errors.Is(err, row.err) {
			return status.Error(row.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}
