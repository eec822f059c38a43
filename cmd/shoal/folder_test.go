package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeFolder writes a folder with nested folders, an empty folder, an
// executable and random files of the sizes given.
func writeFolder(t *testing.T, root string, sizes ...int) {
	t.Helper()
	for k, n := range sizes {
		p := filepath.Join(root, fmt.Sprintf("d%d/f%03d.bin", k%3, k))
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "empty"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// sameFolder fails unless b holds a's files (contents and executable
// bits) and folders, and nothing else.
func sameFolder(t *testing.T, a, b string) {
	t.Helper()
	list := func(root string) map[string]string {
		out := map[string]string{}
		filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(root, p)
			if e.IsDir() {
				out[rel] = "dir"
				return nil
			}
			data, _ := os.ReadFile(p)
			info, _ := e.Info()
			out[rel] = fmt.Sprintf("%v %x", info.Mode()&0o111 != 0, data)
			return nil
		})
		return out
	}
	la, lb := list(a), list(b)
	if len(la) != len(lb) {
		t.Errorf("%d entries in %s, %d in %s", len(la), a, len(lb), b)
	}
	for p, v := range la {
		if lb[p] != v {
			t.Errorf("%s differs", p)
		}
	}
}

func TestGetFolder(t *testing.T) {
	shared := t.TempDir()
	src := filepath.Join(shared, "proj")
	writeFolder(t, src, 10, 2000, 300_000, 0, 70_000)
	reg := startCluster(t, shared, "3")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	work := t.TempDir()
	t.Chdir(work)
	get := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"get", "--registry", reg}, args...), nil, &out, io.Discard)
		return out.String(), err
	}
	// By name, without its slash: into ./proj.
	out, err := get("proj")
	if err != nil {
		t.Fatal(err)
	}
	sameFolder(t, src, filepath.Join(work, "proj"))
	if !strings.Contains(out, "proj: 6 files") {
		t.Errorf("summary %q", out)
	}
	if out, err := get("proj/"); err != nil || !strings.Contains(out, "already complete") {
		t.Errorf("again: %q, %v", out, err)
	}
	// Into a folder given with a trailing slash, and a subfolder.
	if _, err := get("proj/", "-o", "into/"); err != nil {
		t.Fatal(err)
	}
	sameFolder(t, src, filepath.Join(work, "into", "proj"))
	if _, err := get("proj/d1", "-o", "sub"); err != nil {
		t.Fatal(err)
	}
	sameFolder(t, filepath.Join(src, "d1"), filepath.Join(work, "sub"))
	// Changed at the output: refused with exit code 4, then --force.
	os.WriteFile(filepath.Join(work, "proj", "run.sh"), []byte("changed"), 0o755)
	if _, err := get("proj"); exitCode(err, io.Discard) != exitExists {
		t.Errorf("changed output: %v (exit %d)", err, exitCode(err, io.Discard))
	}
	if _, err := get("proj", "--force"); err != nil {
		t.Fatal(err)
	}
	sameFolder(t, src, filepath.Join(work, "proj"))
	// Not to stdout.
	if _, err := get("proj/", "-o", "-"); exitCode(err, io.Discard) != exitUsage {
		t.Errorf("a folder to stdout: %v (exit %d)", err, exitCode(err, io.Discard))
	}
	// A share link of the folder round-trips with no other flag.
	var link bytes.Buffer
	if err := run(ctx, []string{"share", src, "--registry", reg}, nil, &link, io.Discard); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_REGISTRY", "")
	os.RemoveAll(filepath.Join(work, "proj"))
	if err := run(ctx, []string{"get", strings.TrimSpace(link.String())}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("get %s: %v", link.String(), err)
	}
	sameFolder(t, src, filepath.Join(work, "proj"))
}

// A folder download killed with SIGKILL resumes across its files: the
// next run fetches only what the first did not write.
func TestGetFolderResumesAfterKill(t *testing.T) {
	shared := t.TempDir()
	src := filepath.Join(shared, "data")
	writeFolder(t, src, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 1<<20, 5000, 5000)
	reg := startClusterWith(t, shared, "2", "--rate", "1M")
	out := filepath.Join(t.TempDir(), "data")
	bin := shoalBinary(t)
	cmd := exec.Command(bin, "get", "data", "--registry", reg, "-o", out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Killed once a few MiB are in DIR.part.
	eventually(t, 20*time.Second, "3 MiB in "+out+".part", func() bool { return treeBytes(out+".part") >= 3<<20 })
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a partial folder at the output")
	}
	kept := treeBytes(out + ".part")
	var rep struct {
		Size         int64 `json:"size"`
		BytesResumed int64 `json:"bytes_resumed"`
		BytesFetched int64 `json:"bytes_fetched"`
	}
	js, err := exec.Command(bin, "get", "data", "--registry", reg, "-o", out, "--json").Output()
	if err != nil {
		t.Fatalf("second run: %v: %s", err, js)
	}
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	sameFolder(t, src, out)
	// Chunks under way at the kill may be lost: a little under what the
	// part folder held, never less than 2 MiB of it.
	if rep.BytesResumed < 2<<20 || rep.BytesResumed > kept || rep.BytesResumed+rep.BytesFetched != rep.Size {
		t.Errorf("part folder held %d bytes; the second run resumed %d and fetched %d of %d", kept, rep.BytesResumed, rep.BytesFetched, rep.Size)
	}
}

// treeBytes is the bytes of the regular files under root.
func treeBytes(root string) int64 {
	var n int64
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
