package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// shoalBinary builds the shoal command once per test binary.
func shoalBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "shoal")
		if b, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, b)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// endpoint kinds a command may meet instead of what it expects.
const (
	silentTCP  = "silent tcp"  // accepts, never answers
	refusedTCP = "refused tcp" // nothing listens
	silentUDP  = "silent udp"  // never answers
	refusedUDP = "refused udp" // nothing listens
	httpServer = "http server" // answers in plain HTTP/1
)

// endpoint starts one endpoint of kind for the test and returns its
// address.
func endpoint(t *testing.T, kind string) string {
	t.Helper()
	addr, _ := contactedEndpoint(t, kind)
	return addr
}

// contactedEndpoint is endpoint, with a channel closed once something
// connected to it or sent it a datagram (silent endpoints only).
func contactedEndpoint(t *testing.T, kind string) (string, <-chan struct{}) {
	t.Helper()
	contacted := make(chan struct{})
	var once sync.Once
	touch := func() { once.Do(func() { close(contacted) }) }
	switch kind {
	case silentTCP:
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				touch()
			}
		}()
		t.Cleanup(func() {
			lis.Close()
			<-done
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
		})
		return lis.Addr().String(), contacted
	case refusedTCP:
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		return addr, nil
	case silentUDP:
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
				touch()
			}
		}()
		t.Cleanup(func() { pc.Close(); <-done })
		return pc.LocalAddr().String(), contacted
	case refusedUDP:
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		pc.Close()
		return addr, nil
	case httpServer:
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "hello") }))
		t.Cleanup(s.Close)
		return s.Listener.Addr().String(), nil
	}
	t.Fatalf("unknown endpoint %q", kind)
	return "", nil
}

// networkCommands are the commands that talk to the network, with the
// endpoint they are pointed at as ADDR.
var networkCommands = []struct {
	name  string
	args  []string // ADDR is replaced by the endpoint's address
	kinds []string
}{
	{"get", []string{"get", "f.bin", "--registry", "ADDR", "--timeout", "1s", "--no-peer-timeout", "1s"}, []string{silentTCP, refusedTCP, httpServer}},
	{"ls", []string{"ls", "--registry", "ADDR", "--timeout", "1s"}, []string{silentTCP, refusedTCP, httpServer}},
	{"course get --tracker", []string{"course", "get", "f.bin", "--tracker", "ADDR", "--timeout", "500ms"}, []string{silentUDP, refusedUDP}},
	{"course get --server", []string{"course", "get", "f.bin", "--server", "ADDR", "--timeout", "1s"}, []string{silentTCP, refusedTCP, httpServer}},
	{"course get --grader", []string{"course", "get", "--iam", "7", "--grader", "ADDR", "--tracker", "127.0.0.1:9", "--timeout", "1s"}, []string{silentTCP, refusedTCP, httpServer}},
}

// wantCause is what the message must say for each endpoint.
var wantCause = map[string][]string{
	silentTCP:  {"no reply within", "i/o timeout", "timeout"},
	refusedTCP: {"refused"},
	silentUDP:  {"did not answer", "no answer"},
	refusedUDP: {"refused"},
	httpServer: {"not a shoal registry", "BAD_FORMAT", "grader said", "malformed", "bad"},
}

// Every command that talks to the network, pointed at a silent, refusing
// or foreign endpoint, exits non-zero within its deadline with a message
// naming the cause.
func TestSilentAndHostileEndpoints(t *testing.T) {
	bin := shoalBinary(t)
	for _, c := range networkCommands {
		for _, kind := range c.kinds {
			t.Run(c.name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				addr := endpoint(t, kind)
				args := make([]string, len(c.args))
				for i, a := range c.args {
					args[i] = strings.ReplaceAll(a, "ADDR", addr)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, args...)
				cmd.Dir = t.TempDir()
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				start := time.Now()
				err := cmd.Run()
				took := time.Since(start)
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() == 0 || ctx.Err() != nil {
					t.Fatalf("exit: %v after %v (stderr: %s)", err, took, stderr.String())
				}
				if took > 8*time.Second {
					t.Errorf("took %v", took)
				}
				msg := strings.ToLower(stderr.String())
				found := false
				for _, w := range wantCause[kind] {
					found = found || strings.Contains(msg, strings.ToLower(w))
				}
				if !found {
					t.Errorf("message does not name the cause (%v): %s", wantCause[kind], stderr.String())
				}
			})
		}
	}
}

// Every command that waits on the network ends within 2 s of SIGINT with
// exit code 130, whatever it is waiting for.
func TestInterruptEndsEveryWait(t *testing.T) {
	bin := shoalBinary(t)
	cases := []struct {
		name  string
		args  []string
		kind  string // the endpoint ADDR is, or "" for none
		ready string // without an endpoint: the stdout line that says it serves
	}{
		{"get", []string{"get", "f.bin", "--registry", "ADDR", "--timeout", "1m"}, silentTCP, ""},
		{"ls", []string{"ls", "--registry", "ADDR", "--timeout", "1m"}, silentTCP, ""},
		{"course get --tracker", []string{"course", "get", "f.bin", "--tracker", "ADDR", "--timeout", "1m"}, silentUDP, ""},
		{"course get --server", []string{"course", "get", "f.bin", "--server", "ADDR", "--timeout", "1m"}, silentTCP, ""},
		{"course get --grader", []string{"course", "get", "--iam", "7", "--grader", "ADDR", "--tracker", "127.0.0.1:9", "--timeout", "1m"}, silentTCP, ""},
		{"serve --registry", []string{"serve", "--dir", ".", "--listen", "127.0.0.1:0", "--registry", "ADDR", "--index", "idx"}, silentTCP, ""},
		{"registry --join", []string{"registry", "--listen", "127.0.0.1:0", "--join", "ADDR"}, silentTCP, ""},
		{"cluster", []string{"cluster", "--peers", "2", "--dir", ".", "--listen", "127.0.0.1:0"}, "", "registry "},
		{"course serve", []string{"course", "serve", "--dir", ".", "--tracker-port", "0", "--fixed-port", "0", "--grading-port", "0"}, "", "tracker udp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			addr, contacted := "", make(<-chan struct{})
			if c.kind != "" {
				addr, contacted = contactedEndpoint(t, c.kind)
			}
			args := make([]string, len(c.args))
			for i, a := range c.args {
				args[i] = strings.ReplaceAll(a, "ADDR", addr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = t.TempDir()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			serving := make(chan struct{})
			go func() {
				lines := bufio.NewScanner(stdout)
				for lines.Scan() {
					if c.ready != "" && strings.Contains(lines.Text(), c.ready) {
						close(serving)
						c.ready = ""
					}
				}
			}()
			if c.kind == "" {
				contacted = serving
			}
			// Once it has reached the endpoint, which never answers, it waits
			// there for the whole minute of its --timeout.
			select {
			case <-contacted:
			case <-ctx.Done():
				t.Fatalf("never contacted the endpoint (stderr: %s)", stderr.String())
			}
			sent := time.Now()
			cmd.Process.Signal(syscall.SIGINT)
			err = cmd.Wait()
			took := time.Since(sent)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 130 {
				t.Errorf("exit: %v; want code 130 (stderr: %s)", err, stderr.String())
			}
			if took > 2*time.Second {
				t.Errorf("ended %v after SIGINT; want under 2 s", took)
			}
		})
	}
}

// get -o - into a pipe whose reader stopped still ends within 2 s of
// SIGTERM (SIGINT would reach the reader too).
func TestStdoutPipeNobodyReads(t *testing.T) {
	bin := shoalBinary(t)
	dir := t.TempDir()
	data := make([]byte, 8<<20) // far over a pipe's buffer
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := startCluster(t, dir, "2")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin, "get", "big.bin", "--registry", reg, "-o", "-")
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Read a little, so the download surely writes, then stop reading.
	if _, err := io.ReadFull(r, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("exit: %v; want 130", err)
		}
		if took := time.Since(sent); took > 2*time.Second {
			t.Errorf("ended %v after SIGTERM", took)
		}
	case <-timer.C:
		cmd.Process.Kill()
		<-done
		t.Fatal("get -o - blocked on a pipe nobody reads, past SIGTERM")
	}
}
