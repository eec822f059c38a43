package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func withReason(c codes.Code, reason string) error {
	st, err := status.New(c, "detail").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: reasonDomain})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// Every status a peer or registry can send maps to one sentinel and one
// verdict; the reason tells apart what shares a code.
func TestFailureTable(t *testing.T) {
	for _, tc := range []struct {
		err    error
		is     error
		then   verdict
		reason DropReason
	}{
		{withReason(codes.NotFound, "FILE_NOT_FOUND"), ErrNotFound, dropPeer, DropNotHeld},
		{withReason(codes.NotFound, "CHUNK_NOT_HELD"), ErrChunkNotHeld, retryChunk, ""},
		{status.Error(codes.NotFound, "no reason"), ErrNotFound, dropPeer, DropNotHeld},
		{withReason(codes.ResourceExhausted, "BUSY"), ErrBusy, backOff, DropBusy},
		{withReason(codes.ResourceExhausted, "TOO_LARGE"), ErrRejected, dropPeer, DropFailed},
		{withReason(codes.Unavailable, "FILE_CHANGED"), ErrRehashing, backOff, DropBusy},
		{status.Error(codes.Unavailable, "connection refused"), ErrUnreachable, dropPeer, DropUnreachable},
		{status.Error(codes.PermissionDenied, "x"), ErrDenied, dropPeer, DropDenied},
		{status.Error(codes.Internal, "x"), ErrRemote, dropPeer, DropFailed},
		// A peer's own Canceled never ends our download.
		{status.Error(codes.Canceled, "x"), ErrRemote, dropPeer, DropFailed},
		{status.Error(codes.DeadlineExceeded, "x"), ErrRemote, dropPeer, DropFailed},
	} {
		err := fromStatus("chunks from p", tc.err)
		if !errors.Is(err, tc.is) {
			t.Errorf("%v: not %v", err, tc.is)
		}
		if v, r := decide(fmt.Errorf("wrapped: %w", err)); v != tc.then || r != tc.reason {
			t.Errorf("%v: verdict %d %q, want %d %q", err, v, r, tc.then, tc.reason)
		}
	}
	for _, err := range []error{context.Canceled, fmt.Errorf("write: %w", ErrDisk), &NameChangedError{Name: "a"}} {
		if v, _ := decide(err); v != endDownload {
			t.Errorf("%v: verdict %d, want endDownload", err, v)
		}
	}
}
