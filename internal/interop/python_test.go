//go:build interop

package interop

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// python is Debian's interpreter, which sees apt's python3-grpcio.
const python = "/usr/bin/python3"

// startPythonPeer runs the Python example peer and returns its address once
// it has announced; cancel stops it (it leaves the registry).
func startPythonPeer(t *testing.T, dir, registry string) (addr string, stop func()) {
	t.Helper()
	cmd := exec.Command(python, filepath.Join(repoRoot(t), "examples/python/shoal_peer.py"), "--dir", dir, "--registry", registry)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "ready" {
				lines <- f[1]
			}
		}
		close(lines)
	}()
	select {
	case addr, ok := <-lines:
		if !ok {
			t.Fatal("python peer exited before it was ready")
		}
		return addr, stop
	case <-time.After(30 * time.Second):
		t.Fatal("python peer not ready after 30 s")
	}
	return "", nil
}

func TestPythonAndGoPeersInterop(t *testing.T) {
	dir := t.TempDir()
	data := writeRandom(t, dir, "shared.bin", 6<<20)
	// Go peers capped so the Python peer surely gets a share of the work.
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: []cluster.PeerSpec{{Rate: 2 << 20}, {Rate: 2 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	pyAddr, stopPy := startPythonPeer(t, dir, c.Registry.Addr())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	out := filepath.Join(t.TempDir(), "from-python-and-go.bin")
	rep, err := client.NewDownload(client.Config{}, &client.Registry{Target: "shared.bin", Conn: cc}, out).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("Go client's file differs")
	}
	var pyBytes int64
	for _, p := range rep.Peers {
		if p.Addr == pyAddr {
			pyBytes = p.Bytes
		}
		if p.Dropped != "" {
			t.Errorf("peer dropped: %+v", p)
		}
	}
	if pyBytes == 0 || len(rep.Peers) != 3 {
		t.Fatalf("want the Python peer and both Go peers to serve: %+v", rep.Peers)
	}

	stopPy() // it leaves: the Python downloader now has only Go peers
	pyOut := filepath.Join(t.TempDir(), "by-python.bin")
	cmd := exec.CommandContext(ctx, python, filepath.Join(repoRoot(t), "examples/python/shoal_get.py"), "shared.bin", "--registry", c.Registry.Addr(), "-o", pyOut)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python downloader: %v\n%s", err, b)
	} else if strings.Contains(string(b), pyAddr) {
		t.Fatalf("python downloader used the stopped Python peer:\n%s", b)
	}
	if got, _ := os.ReadFile(pyOut); !bytes.Equal(got, data) {
		t.Fatal("Python downloader's file differs")
	}
}

// The Python folder downloader fetches a folder from Go peers: its tree
// checked against the tree id, many files to a GetChunks call.
func TestPythonFolderDownloader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	shared := t.TempDir()
	src := filepath.Join(shared, "proj")
	for name, data := range map[string]string{"a.txt": "a", "sub/b.bin": strings.Repeat("b", 300_000), "sub/deep/c.txt": "c", "zero": ""} {
		p := filepath.Join(src, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(src, "a.txt"), 0o755)
	os.MkdirAll(filepath.Join(src, "empty"), 0o755)
	c, err := cluster.Start(ctx, cluster.Config{Dir: shared, Peers: make([]cluster.PeerSpec, 3)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := filepath.Join(t.TempDir(), "copy")
	cmd := exec.CommandContext(ctx, python, filepath.Join(repoRoot(t), "examples/python/shoal_get_folder.py"), "proj", "--registry", c.Registry.Addr(), "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python folder downloader: %v\n%s", err, b)
	}
	if b, err := exec.Command("diff", "-r", src, out).CombinedOutput(); err != nil {
		t.Fatalf("folders differ: %v\n%s", err, b)
	}
	if fi, err := os.Stat(filepath.Join(out, "a.txt")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("executable bit lost: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(out, "empty")); err != nil || !fi.IsDir() {
		t.Fatalf("empty folder lost: %v", err)
	}
}
