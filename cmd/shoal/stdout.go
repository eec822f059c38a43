package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// getToStdout downloads target into a temporary file and writes each chunk
// to stdout once it is verified, in file order: nothing unverified ever
// reaches stdout. On failure stdout holds a verified prefix and the
// command exits non-zero.
func getToStdout(ctx context.Context, g *globals, target string, f getFlags) error {
	cc, dial, err := f.connect()
	if err != nil {
		return err
	}
	defer cc.Close()
	reg := f.lookup(cc, dial, target)
	defer reg.Close()
	m, err := reg.Manifest(ctx)
	if errors.Is(err, client.ErrIsFolder) {
		return usageError{fmt.Errorf("%s is a folder: it cannot be written to stdout; use -o DIR", chunkstore.Clip(target))}
	}
	if err != nil {
		return getError(f.conn.explain(ctx, f.registry, err))
	}
	tmp, err := os.MkdirTemp("", "shoal-stdout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cfg := f.config()
	cfg.Serve = true // the part file stays open for the reads below
	d := client.NewDownload(cfg, reg, filepath.Join(tmp, "file"))
	defer d.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The feed below ends when the download does, whatever its outcome.
	wctx, wcancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() {
		_, err := d.Run(ctx)
		runErr <- err
		wcancel()
	}()
	select {
	case <-d.Ready():
	case err := <-runErr:
		if err == nil { // an empty file, or already complete: nothing to stream
			return nil
		}
		return getError(err)
	}
	next, n := 0, m.NumChunks()
	buf := make([]byte, m.ChunkSize)
	flush := func(have func(int) bool) error {
		for next < n && have(next) {
			b, err := d.ReadChunk(next, buf)
			if err != nil {
				return err
			}
			if err := writeOrCancel(ctx, g.stdout, b); err != nil {
				return fmt.Errorf("stdout: %w", err)
			}
			next++
		}
		return nil
	}
	werr := d.WatchHave(wctx, func(have []bool, _ []int, _ bool) error {
		return flush(func(i int) bool { return have[i] })
	})
	if werr != nil {
		cancel()
		<-runErr
		return werr
	}
	if err := <-runErr; err != nil {
		return downloadError(ctx, "", nil, err)
	}
	return flush(func(int) bool { return true }) // complete: the rest, in order
}

// writeOrCancel writes b to w, or gives up when ctx ends: a pipe whose
// reader stopped reading must not hold the command past SIGTERM.
func writeOrCancel(ctx context.Context, w io.Writer, b []byte) error {
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(b)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the process is ending; the write goes with it
	}
}
