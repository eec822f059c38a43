package course

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer runs a course server on dir for the test.
func startServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// ask sends one request line to the server's fixed port and returns the
// first reply line.
func ask(t *testing.T, s *Server, req Request) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.FixedAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req.String()+"\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", req, err)
	}
	return line
}

// The course server serves only what chunkstore serves: never a dot-file,
// a symlink, or anything outside its folder.
func TestServerServesOnlyWhatTheStoreServes(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside.txt")
	for path, body := range map[string]string{
		filepath.Join(dir, "ok.txt"):  "public\n",
		filepath.Join(dir, ".secret"): "private\n",
		outside:                       "elsewhere\n",
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, ServerConfig{Dir: dir, Mode: Unlimited, GradingPort: -1, Ports: 1})
	if got := ask(t, s, Request{Name: "ok.txt", Kind: KindWhole}); !strings.HasPrefix(got, "200") {
		t.Errorf("ok.txt: %q", got)
	}
	for _, name := range []string{".secret", "link.txt", "../" + filepath.Base(filepath.Dir(outside)) + "/outside.txt"} {
		if got := ask(t, s, Request{Name: name, Kind: KindWhole}); !strings.HasPrefix(got, "400") {
			t.Errorf("%s: served %q", name, got)
		}
	}
}
