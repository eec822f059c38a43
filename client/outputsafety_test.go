package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalnet/shoal/client"
)

// A second download to an output another one is writing fails at once,
// naming the process, and leaves the first one's part file alone.
func TestOneDownloadPerOutput(t *testing.T) {
	data, m := testFile(20)
	release := make(chan struct{})
	blocked := &funcSource{id: "slow"}
	honest := serve(data, m)
	blocked.fetch = func(ctx context.Context, n int64, chunks []int, got func(int, [][]byte) error) error {
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return honest(ctx, n, chunks, got)
	}
	out := filepath.Join(t.TempDir(), "out")
	first := client.NewDownload(client.Config{Peers: 1}, &listDisc{m: m, srcs: []client.Source{blocked}}, out)
	done := make(chan error, 1)
	go func() {
		_, err := first.Run(testCtx(t))
		done <- err
	}()
	<-first.Ready() // the part file is open and locked
	other := &funcSource{id: "other", fetch: serve(data, m)}
	_, err := client.NewDownload(client.Config{Peers: 1}, &listDisc{m: m, srcs: []client.Source{other}}, out).Run(testCtx(t))
	if !errors.Is(err, client.ErrBusyOutput) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second download: %v; want ErrBusyOutput naming pid %d", err, os.Getpid())
	}
	if other.fetches.Load() != 0 {
		t.Error("the second download fetched chunks")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
}

// A symbolic link placed at OUT or OUT.part is never followed.
func TestSymlinkAtOutputIsRefused(t *testing.T) {
	for _, at := range []string{"out", "out.part"} {
		t.Run(at, func(t *testing.T) {
			data, m := testFile(4)
			dir := t.TempDir()
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(dir, at)); err != nil {
				t.Fatal(err)
			}
			src := &funcSource{id: "p", fetch: serve(data, m)}
			_, err := client.NewDownload(client.Config{Peers: 1, Force: true}, &listDisc{m: m, srcs: []client.Source{src}}, filepath.Join(dir, "out")).Run(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("got %v; want a refusal naming the symbolic link", err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "keep me" {
				t.Errorf("the link's target was written: %q", b)
			}
			if fi, err := os.Lstat(filepath.Join(dir, at)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the link was replaced: %v", err)
			}
		})
	}
}
