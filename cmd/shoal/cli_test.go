package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
)

// startCluster runs `shoal cluster` in process and returns the registry
// address it prints.
func startCluster(t *testing.T, dir string, peers string) string {
	t.Helper()
	return startClusterWith(t, dir, peers)
}

// startClusterWith is startCluster with extra flags.
func startClusterWith(t *testing.T, dir string, peers string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	args := append([]string{"cluster", "--peers", peers, "--dir", dir, "--listen", "127.0.0.1:0", "--log-level", "warn"}, extra...)
	go func() {
		done <- run(ctx, args, nil, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cluster: %v", err)
		}
	})
	lines := bufio.NewScanner(pr)
	re := regexp.MustCompile(`^registry (\S+) with`)
	var reg string
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			reg = m[1]
			break
		}
	}
	if reg == "" {
		t.Fatal("cluster printed no registry address")
	}
	go io.Copy(io.Discard, pr)
	return reg
}

func TestClusterThenLs(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"one.bin", "two.bin"} {
		b := make([]byte, 100_000)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := startCluster(t, dir, "5")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, []string{"ls", "--registry", reg, "--json"}, nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var files []listedFile
	if err := json.Unmarshal(out.Bytes(), &files); err != nil {
		t.Fatalf("ls --json printed %q: %v", out.String(), err)
	}
	// The peers' shared folder, then the two files.
	if len(files) != 3 || files[0].Name != "./" || !files[0].Folder || files[0].FileCount != 2 || files[0].Holders != 5 ||
		files[1].Name != "one.bin" || files[2].Name != "two.bin" {
		t.Fatalf("ls listed %+v", files)
	}
	for _, f := range files[1:] {
		if f.Holders != 5 || f.PartialHolders != 0 || f.Size != 100_000 {
			t.Errorf("want 5 full holders of 100000 bytes: %+v", f)
		}
	}
}

func TestUsageErrorsExitNonZero(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string // words of the cause
	}{
		{[]string{"serve"}, exitUsage, "--dir is required"},
		{[]string{"serve", "--dir", "/does/not/exist"}, exitUsage, "does not exist"},
		{[]string{"serve", "--dir", ".", "--rate", "-1"}, exitUsage, "not a size"},
		{[]string{"hash"}, exitUsage, "accepts 1 arg"},
		{[]string{"hash", "/does/not/exist"}, exitFailure, "no such file"},
		{[]string{"ls", "--registry", "127.0.0.1:0"}, exitUsage, "port"},
		{[]string{"cluster", "--dir", ".", "--peers", "0"}, exitUsage, "--peers"},
		{[]string{"nonsense"}, exitUsage, "unknown command"},
		{[]string{"serve", "--no-such-flag"}, exitUsage, "unknown flag"},
		{[]string{"serve", "--dir", ".", "--log-level", "loud"}, exitUsage, "--log-level"},
		{[]string{"get", "a", "--peers", "0"}, exitUsage, "--peers"},
		{[]string{"demo", "--size", "huge"}, exitUsage, "not a size"},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		err := run(context.Background(), c.args, nil, io.Discard, &stderr)
		if err == nil {
			t.Errorf("%v: no error", c.args)
			continue
		}
		if code := exitCode(err, &stderr); code != c.code || !strings.Contains(stderr.String(), "shoal:") || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), c.code, c.want)
		}
	}
}

func TestGetFromClusterAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outDir := t.TempDir()
	out := filepath.Join(outDir, "got.bin")
	var stdout bytes.Buffer
	if err := run(ctx, []string{"get", "data.bin", "--registry", reg, "-o", out, "--json"}, nil, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Size         int64 `json:"size"`
		BytesFetched int64 `json:"bytes_fetched"`
		Peers        []struct {
			Bytes int64 `json:"bytes"`
		} `json:"peers"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("--json output %q: %v", stdout.String(), err)
	}
	if rep.Size != int64(len(data)) || rep.BytesFetched != rep.Size || len(rep.Peers) != 3 {
		t.Fatalf("summary: %+v", rep)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("downloaded file differs")
	}
	// -o naming a folder puts the file inside it under its own name.
	if err := run(ctx, []string{"get", "data.bin", "--registry", reg, "-o", outDir, "--json"}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(outDir, "data.bin")); !bytes.Equal(got, data) {
		t.Fatal("-o FOLDER: no identical data.bin inside it")
	}

	codes := []struct {
		args []string
		code int
	}{
		{[]string{"get", "nope.bin", "--registry", reg, "-o", filepath.Join(outDir, "x")}, exitNotFound},
		{[]string{"get", "data.bin", "--registry", reg, "-o", filepath.Join(outDir, "missing", "x")}, exitFailure},
		{[]string{"get", "data.bin", "--registry", reg, "-o", filepath.Join(outDir, "missing") + string(filepath.Separator)}, exitOK}, // created
		{[]string{"get", "data.bin", "--registry", "http://" + reg}, exitUsage},
		{[]string{"get", "data.bin", "--registry", "127.0.0.1:99999"}, exitUsage},
		{[]string{"get", "data.bin", "--registry", reg, "--peers", "0"}, exitUsage},
	}
	for _, c := range codes {
		var stderr bytes.Buffer
		err := run(ctx, c.args, nil, io.Discard, &stderr)
		if got := exitCode(err, &stderr); got != c.code {
			t.Errorf("%v: exit %d (%v), want %d", c.args, got, err, c.code)
		}
	}
	if err := os.WriteFile(out, []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(ctx, []string{"get", "data.bin", "--registry", reg, "-o", out}, nil, io.Discard, io.Discard)
	if got := exitCode(err, io.Discard); got != exitExists {
		t.Errorf("existing output: exit %d (%v), want %d", got, err, exitExists)
	}
}

func TestDemoRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"demo", "--size", "33554432", "--slow-rate", "4194304"}, nil, &out, io.Discard); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"slow", "quits mid-way", "byte-identical", "MiB/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 100 || strings.TrimRight(line, " ") != line {
			t.Errorf("line over 100 columns or with trailing spaces: %q", line)
		}
	}
}

// The summary line: IEC units, a resume said, one peer said so.
func TestSummary(t *testing.T) {
	rep := &client.Report{Size: 512 << 20, BytesResumed: 220 << 20, BytesFetched: 292 << 20, Seconds: 2, Peers: make([]client.PeerReport, 1)}
	got := summary("OUT", rep, "sh1x")
	for _, want := range []string{"512.0 MiB", "220.0 MiB resumed from OUT.part, 292.0 MiB fetched", "146.0 MiB/s", "from 1 peer,"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
	empty := summary("OUT", &client.Report{Seconds: 0.01, Peers: []client.PeerReport{}}, "sh1x")
	if strings.Contains(empty, "0 peers") || strings.Contains(empty, "B/s") {
		t.Errorf("empty file: %q", empty)
	}
}

func TestOutputPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sep := string(filepath.Separator)
	for _, c := range []struct{ out, name, want string }{
		{"", "a/b/big.iso", "big.iso"},
		{"", "..", "ID"},
		{"", "x/..", "ID"},
		{"", "/", "ID"},
		{"", ".bashrc", "ID"},
		{"", "-rf", "ID"},
		{"", "a\\..\\..\\b", "ID"},
		{"", "x\x1b[31m", "ID"},
		{"", "dir/.hidden", "ID"},
		{"", "ok-name.txt", "ok-name.txt"},
		{dir, "big.iso", filepath.Join(dir, "big.iso")},
		{dir + sep, "sub/big.iso", filepath.Join(dir, "big.iso")},
		{filepath.Join(dir, "new") + sep, "big.iso", filepath.Join(dir, "new", "big.iso")},
		{filepath.Join(dir, "new.iso"), "big.iso", filepath.Join(dir, "new.iso")},
		{file, "big.iso", file},
	} {
		if got := outputPath(c.out, c.name, "ID"); got != c.want {
			t.Errorf("outputPath(%q, %q) = %q, want %q", c.out, c.name, got, c.want)
		}
	}
}

func TestInterruptedSaysWhatIsKept(t *testing.T) {
	out := filepath.Join(t.TempDir(), "big.iso")
	rep := &client.Report{Size: 8 << 20, BytesResumed: 1 << 20, BytesFetched: 2 << 20}
	for _, c := range []struct {
		part bool
		rep  *client.Report
		want string
	}{
		{false, rep, "interrupted"},
		{true, rep, "interrupted: 3.0 MiB of 8.0 MiB verified in " + out + ".part; run the same command to resume"},
		{true, &client.Report{Size: 8 << 20}, "interrupted: " + out + ".part is kept; run the same command to resume"},
	} {
		if c.part {
			if err := os.WriteFile(out+".part", nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var stderr bytes.Buffer
		if code := exitCode(interrupted(out, c.rep), &stderr); code != exitCanceled || stderr.String() != "shoal: "+c.want+"\n" {
			t.Errorf("exit %d, %q; want %d, %q", code, stderr.String(), exitCanceled, "shoal: "+c.want+"\n")
		}
	}
}
