// Command shoal is a peer-to-peer file transfer tool: it serves folders,
// runs registries, and downloads files from many peers at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	code := exitCode(err, os.Stderr)
	if interrupted {
		code = exitCanceled // whatever the command made of it, even a server's clean stop
	}
	os.Exit(code)
}

// run executes one shoal command line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := newRootCmd(stdin, stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	// cobra reports an unknown subcommand with an untyped error; it is a
	// usage error like the others.
	if err != nil && strings.HasPrefix(err.Error(), "unknown command ") {
		return usageError{err}
	}
	return err
}

// Exit codes, documented in the README.
const (
	exitOK       = 0
	exitFailure  = 1 // the command failed (download failed, server error)
	exitUsage    = 2 // bad flags or arguments
	exitNotFound = 3 // the file is not on the network
	exitExists   = 4 // the output exists and differs; use --force
	exitCanceled = 130
)

// usageError marks errors in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// codedError carries a specific exit code.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "shoal:", err)
	var ue usageError
	var ce codedError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, context.Canceled):
		return exitCanceled
	default:
		return exitFailure
	}
}
