package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/certs"
)

func TestRegistryAddr(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		in, want string
		usage    bool
	}{
		{"", defaultRegistry, false},
		{"127.0.0.1", "127.0.0.1:7000", false},
		{"127.0.0.1:7200", "127.0.0.1:7200", false},
		{"::1", "[::1]:7000", false},
		{"[::1]:7001", "[::1]:7001", false},
		{"localhost", "localhost:7000", false},
		{"http://127.0.0.1:7200", "", true},
		{"127.0.0.1:0", "", true},
		{"127.0.0.1:http", "", true},
	} {
		got, err := registryAddr(ctx, "--registry", c.in)
		if c.usage {
			if code := exitCode(err, io.Discard); code != exitUsage {
				t.Errorf("%q: %v (exit %d), want a usage error", c.in, err, code)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	_, err := registryAddr(ctx, "--registry", "no-such-host.invalid:7000")
	if err == nil || !strings.Contains(err.Error(), "unknown host no-such-host.invalid") {
		t.Errorf("unknown host: %v", err)
	}
}

// Messages name the cause, and bad flag values are usage errors.
func TestFlagMistakes(t *testing.T) {
	missing := t.TempDir() + "/nope"
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "--dir", missing}, exitUsage, "does not exist"},
		{[]string{"ls", "--log-level", "verbose"}, exitUsage, "--log-level"},
		{[]string{"ls", "--log-format", "yaml"}, exitUsage, "--log-format"},
		{[]string{"ls", "--registry", "http://127.0.0.1:7200"}, exitUsage, "not a URL (try --registry 127.0.0.1:7200)"},
		{[]string{"registry", "--listen", "127.0.0.1:0", "--token", "t"}, exitUsage, "--token needs --gossip-key"},
		{[]string{"registry", "--listen", "127.0.0.1:0", "--gossip-key", "c2hvcnQ="}, exitUsage, "--gossip-key must be base64 of 16, 24 or 32 bytes"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var stderr bytes.Buffer
		err := run(ctx, c.args, nil, io.Discard, &stderr)
		cancel()
		if code := exitCode(err, &stderr); code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}

// --help never prints a secret from the environment.
func TestHelpPrintsNoToken(t *testing.T) {
	t.Setenv("SHOAL_TOKEN", "s3cret-token")
	t.Setenv("SHOAL_GOSSIP_KEY", "s3cret-gossip-key")
	t.Setenv("SHOAL_REGISTRY", "10.9.8.7:7000")
	for _, cmd := range []string{"serve", "registry", "get", "ls", "cluster"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{cmd, "--help"}, nil, &out, &out); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "s3cret") {
			t.Errorf("shoal %s --help prints a token:\n%s", cmd, out.String())
		}
		if strings.Count(out.String(), "10.9.8.7") > 0 {
			t.Errorf("shoal %s --help prints SHOAL_REGISTRY's value as a default", cmd)
		}
	}
}

// A plaintext ls against a TLS registry says TLS is needed, and one with
// the CA but no client certificate says a certificate is needed.
func TestTLSMistakesNameTheCause(t *testing.T) {
	dir := t.TempDir()
	files, err := certs.Generate(dir, []string{"127.0.0.1"}, []string{"registry"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := files["registry"]
	addr := startRegistry(t, "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ls", "--registry", addr, "--timeout", "3s"}, "requires TLS"},
		{[]string{"ls", "--registry", addr, "--timeout", "3s", "--tls-ca", f.CA}, "requires a client certificate"},
	} {
		var stderr bytes.Buffer
		var err error
		eventually(t, 10*time.Second, "the registry answers", func() bool {
			stderr.Reset()
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ccancel()
			err = run(cctx, c.args, nil, io.Discard, &stderr)
			exitCode(err, &stderr)
			return !strings.Contains(stderr.String(), "refused")
		})
		if err == nil || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: %q; want %q", c.args, stderr.String(), c.want)
		}
	}
}

// serve with a token the registry refuses stops at once, saying so.
func TestServeWithWrongTokenFails(t *testing.T) {
	addr := startRegistry(t, "--token", "right", "--gossip-key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	dir := t.TempDir()
	var err2 error
	var stderr bytes.Buffer
	eventually(t, 10*time.Second, "the registry answers", func() bool {
		stderr.Reset()
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		err2 = run(sctx, []string{"serve", "--dir", dir, "--listen", "127.0.0.1:0", "--registry", addr, "--token", "wrong", "--index", dir + "/.idx", "--log-level", "error"}, nil, io.Discard, &stderr)
		return err2 == nil || !strings.Contains(err2.Error(), "refused")
	})
	if code := exitCode(err2, io.Discard); code != exitFailure || !strings.Contains(err2.Error(), "rejected the token") {
		t.Fatalf("serve with a wrong token: exit %d, %v", code, err2)
	}
}

// --json says how the download ended, with the error on failure, and an
// empty peer list is [] not null.
func TestGetJSONOutcome(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/a.bin", []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "1")
	for _, c := range []struct {
		target, outcome, errWant string
	}{
		{"a.bin", "complete", ""},
		{"nope.bin", "failed", "file not found"},
	} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		run(ctx, []string{"get", c.target, "--registry", reg, "--json", "-o", t.TempDir() + "/x"}, nil, &out, io.Discard)
		cancel()
		var got struct {
			Outcome string            `json:"outcome"`
			Error   string            `json:"error"`
			Peers   []json.RawMessage `json:"peers"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("%s: %q: %v", c.target, out.String(), err)
		}
		if got.Outcome != c.outcome || !strings.Contains(got.Error, c.errWant) || got.Peers == nil || strings.Contains(out.String(), `"peers": null`) {
			t.Errorf("%s: %s", c.target, out.String())
		}
	}
}

// -o - writes the verified file to stdout; -o /dev/stdout does the same;
// -o newdir/ creates the folder.
func TestGetToStdoutAndNewFolder(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20+77)
	rand.Read(data)
	if err := os.WriteFile(dir+"/s.bin", data, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "3")
	for _, o := range []string{"-", "/dev/stdout"} {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := run(ctx, []string{"get", "s.bin", "--registry", reg, "-o", o}, nil, &out, io.Discard)
		cancel()
		if err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Errorf("-o %s: %v, %d bytes, equal %v", o, err, out.Len(), bytes.Equal(out.Bytes(), data))
		}
	}
	newDir := t.TempDir() + "/new/deeper/"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, []string{"get", "s.bin", "--registry", reg, "-o", newDir}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(newDir + "s.bin"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("-o newdir/: %v", err)
	}
}

// verify: a matching file exits 0 with no network; a file with one chunk
// changed exits 1 naming that chunk.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(dir+"/v.bin", data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"hash", dir + "/v.bin"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	id := strings.Fields(out.String())[0]
	reg := startCluster(t, dir, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	local := t.TempDir() + "/v.bin"
	bad := append([]byte(nil), data...)
	bad[1<<20+5] ^= 1 // one byte: one chunk, whatever the chunk size
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"verify", local, id, "--registry", "127.0.0.1:1"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("matching file: %v", err)
	}
	if err := os.WriteFile(local, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(ctx, []string{"verify", local, id, "--registry", reg}, nil, io.Discard, io.Discard)
	if code := exitCode(err, io.Discard); code != 1 || !strings.Contains(fmt.Sprint(err), "1 chunk of") {
		t.Fatalf("one byte changed: exit %d, %v", code, err)
	}
}

// With --serve and --seed-for, the summary comes when the download ends,
// and the seeding is reported with what it uploaded.
func TestServeSummaryThenSeeding(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/w.bin", make([]byte, 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	out := t.TempDir() + "/w.bin"
	if err := run(ctx, []string{"get", "w.bin", "--registry", reg, "-o", out, "--serve", "--seed-for", "100ms"}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if strings.Count(stdout.String(), "verified sh1") != 1 || !strings.Contains(stderr.String(), "seeding for 100ms") || !strings.Contains(stderr.String(), "seeded: 0 B uploaded to 0 peers") {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// A share link round-trips: share prints it, get fetches it with no other
// flag, into the name it carries.
func TestShareLinkRoundTrip(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 300_000)
	rand.Read(data)
	if err := os.WriteFile(dir+"/s.bin", data, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"share", dir + "/s.bin", "--registry", reg}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	link := strings.TrimSpace(out.String())
	l, ok, err := parseLink(link)
	if !ok || err != nil || l.name != "s.bin" || l.registry != reg || !strings.HasPrefix(l.id, "sh1") {
		t.Fatalf("link %q: %+v %v %v", link, l, ok, err)
	}
	work := t.TempDir()
	t.Chdir(work)
	t.Setenv("SHOAL_REGISTRY", "")
	if err := run(ctx, []string{"get", link}, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("get %s: %v", link, err)
	}
	if got, _ := os.ReadFile(work + "/s.bin"); !bytes.Equal(got, data) {
		t.Fatal("the link's file differs")
	}
	// A folder's link carries its tree id.
	out.Reset()
	if err := run(ctx, []string{"share", dir, "--registry", reg}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if l, _, err := parseLink(strings.TrimSpace(out.String())); err != nil || !strings.HasPrefix(l.id, "st1") {
		t.Fatalf("folder link %q: %v", out.String(), err)
	}
	for _, bad := range []string{"shoal:nope", "shoal:sh1abc?name=%zz"} {
		if _, ok, err := parseLink(bad); !ok || err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixedProgress is a download frozen at one point.
type fixedProgress client.Progress

func (f fixedProgress) Progress() client.Progress { return client.Progress(f) }

// The bar counts only bytes fetched in this run and says what was resumed;
// stopped by an interrupt it stays where it was, not at 100%.
func TestProgressBarTellsTheTruth(t *testing.T) {
	p := fixedProgress{Size: 512 << 20, Resumed: 220 << 20, Done: 320 << 20, Fetched: 100 << 20, ActivePeers: 1}
	for _, complete := range []bool{false, true} {
		var out syncBuffer
		stop := progressBar(&out, p, p.Size)
		eventually(t, 10*time.Second, "the bar is drawn", func() bool { return strings.Contains(out.String(), "resumed") })
		stop(complete)
		got := out.String()
		if !strings.Contains(got, "1 peer, 220.0 MiB resumed") || !strings.Contains(got, "292 MiB") || !strings.Contains(got, "34%") {
			t.Errorf("bar %q: want the resume said and 100 of 292 MiB (34%%)", got)
		}
		if strings.Contains(got, "100%") != complete {
			t.Errorf("complete=%v: bar %q", complete, got)
		}
	}
}

// Folders are announced and listed like files: a trailing /, a file count,
// a prefix filter.
func TestLsFolders(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"top.txt", "sub/a.txt", "sub/b.txt", "sub/deeper/c.txt"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := startCluster(t, dir, "2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"ls", "--registry", reg, "--json", "sub/"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var files []listedFile
	if err := json.Unmarshal(out.Bytes(), &files); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, " "); got != "sub/ sub/a.txt sub/b.txt sub/deeper/ sub/deeper/c.txt" {
		t.Fatalf("ls sub/: %s", got)
	}
	if f := files[0]; !f.Folder || f.FileCount != 3 || f.Holders != 2 || !strings.HasPrefix(f.ContentID, "st1") {
		t.Fatalf("sub/: %+v", f)
	}
}

// --parents keeps the file's folders: two files of the same base name in
// two folders land side by side, each under its own folder.
func TestGetParents(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"sub/top.txt", "top.txt"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte("contents of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := startCluster(t, dir, "1")
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, name := range []string{"top.txt", "sub/top.txt"} {
		if err := run(ctx, []string{"get", name, "--registry", reg, "-o", out, "--parents"}, nil, io.Discard, io.Discard); err != nil {
			t.Fatalf("get %s --parents: %v", name, err)
		}
		if got, _ := os.ReadFile(filepath.Join(out, name)); string(got) != "contents of "+name {
			t.Errorf("%s: %q", name, got)
		}
	}
	if _, err := parentsPath(out, "../escape"); err == nil {
		t.Error("--parents accepted a name leaving -o")
	}
}

// A name that names several files is a usage error (exit 2) that lists
// the ids to ask by, with no gRPC code name in the message.
func TestAmbiguousNameIsAUsageError(t *testing.T) {
	reg := startRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	var err error
	for k := range 2 {
		dir := t.TempDir()
		if err := os.WriteFile(dir+"/same.txt", []byte(fmt.Sprint("version ", k)), 0o644); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			run(ctx, []string{"serve", "--dir", dir, "--listen", "127.0.0.1:0", "--registry", reg, "--index", dir + "/.idx", "--log-level", "error"}, nil, io.Discard, io.Discard)
		})
	}
	var stderr bytes.Buffer
	eventually(t, 20*time.Second, "both versions announced", func() bool {
		stderr.Reset()
		gctx, gcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer gcancel()
		err = run(gctx, []string{"get", "same.txt", "--registry", reg, "-o", t.TempDir() + "/x"}, nil, io.Discard, &stderr)
		exitCode(err, &stderr)
		return strings.Contains(stderr.String(), "2 different files")
	})
	msg := stderr.String()
	if code := exitCode(err, io.Discard); code != exitUsage || strings.Contains(msg, "FailedPrecondition") || strings.Contains(msg, "desc =") || !strings.Contains(msg, "ask by content id") {
		t.Errorf("exit %d: %q", code, msg)
	}
}

// registry and serve log their start (address, TLS, token) and their stop.
func TestServersLogStartAndStop(t *testing.T) {
	for _, args := range [][]string{
		{"registry", "--listen", "127.0.0.1:0"},
		{"serve", "--dir", t.TempDir(), "--listen", "127.0.0.1:0", "--index", t.TempDir() + "/idx"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		var logs syncBuffer
		done := make(chan error, 1)
		go func() { done <- run(ctx, args, nil, io.Discard, &logs) }()
		eventually(t, 10*time.Second, args[0]+" logs its start", func() bool { return strings.Contains(logs.String(), "serving") })
		cancel()
		<-done
		got := logs.String()
		for _, want := range []string{"tls=false", "token=false", "stopped"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s logs lack %q:\n%s", args[0], want, got)
			}
		}
	}
}

// startRegistry runs `shoal registry` in process on a free loopback port
// with extra flags, stopped when the test ends, and returns its address.
func startRegistry(t *testing.T, extra ...string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"registry", "--listen", addr, "--log-level", "error"}, extra...), nil, io.Discard, io.Discard)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return addr
}
