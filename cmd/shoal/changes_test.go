package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startClusterArgs runs `shoal cluster` with extra flags.
func startClusterArgs(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	return startClusterWith(t, dir, "3", extra...)
}

// eventually runs check every 50 ms until it is true or within fails.
func eventually(t *testing.T, within time.Duration, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		<-tick.C
	}
}

func lsOutput(t *testing.T, reg string) string {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, []string{"ls", "--registry", reg}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// A file edited while the cluster serves it is fetched by name in its new
// version: the download notices the name now names new contents.
func TestGetByNameAfterTheFileChanged(t *testing.T) {
	dir := t.TempDir()
	note := filepath.Join(dir, "note.txt")
	if err := os.WriteFile(note, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startClusterArgs(t, dir)
	if err := os.WriteFile(note, []byte("two, longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "note.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	err := run(ctx, []string{"get", "note.txt", "--registry", reg, "-o", out, "--no-peer-timeout", "10s"}, nil, io.Discard, &stderr)
	if err != nil {
		t.Fatalf("get: %v (stderr: %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "note.txt changed on the network; fetching sh1") {
		t.Errorf("stderr does not say the name changed: %q", stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != "two, longer\n" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// `shoal cluster` follows its folder: added files appear in ls.
func TestClusterRescansItsFolder(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "first.txt"), []byte("first\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startClusterArgs(t, dir, "--rescan", "100ms")
	if err := os.WriteFile(filepath.Join(dir, "added.txt"), []byte("added\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "added.txt listed", func() bool { return strings.Contains(lsOutput(t, reg), "added.txt") })
}
