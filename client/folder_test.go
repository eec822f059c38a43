package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

// makeTree writes a folder of nested folders: an empty file, an empty
// folder, an executable, small files (two with the same contents), and a
// few large ones. It returns the folder and its total file bytes.
func makeTree(t testing.TB, small int) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	var total int64
	write := func(name string, data []byte, perm os.FileMode) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		total += int64(len(data))
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	write("empty.txt", nil, 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "nothing", "here"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("bin/run.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	for i := range small {
		write(fmt.Sprintf("small/d%02d/f%04d.txt", i%17, i), random(1+i*37%4000), 0o644)
	}
	same := random(3000)
	write("dup/one.bin", same, 0o644)
	write("dup/two.bin", same, 0o644)
	write("big/a.bin", random(3<<20), 0o644)
	write("big/deep/b.bin", random(5<<20+123), 0o644)
	return dir, total
}

// sameTree fails unless dirs a and b hold the same paths, contents,
// executable bits and empty folders.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	list := func(root string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			info, err := e.Info()
			if err != nil {
				return err
			}
			switch {
			case e.IsDir():
				out[rel] = "dir"
			case e.Type().IsRegular():
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				out[rel] = fmt.Sprintf("file x=%v %x", info.Mode()&0o111 != 0, data)
			default:
				out[rel] = "other " + info.Mode().String()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	la, lb := list(a), list(b)
	for p, v := range la {
		if lb[p] != v {
			t.Errorf("%s: %.40q in %s, %.40q in %s", p, v, a, lb[p], b)
		}
	}
	for p := range lb {
		if _, ok := la[p]; !ok {
			t.Errorf("%s: in %s only", p, b)
		}
	}
}

// countCalls counts the GetChunks calls a server answers.
func countCalls(n *atomic.Int64) grpc.ServerOption {
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if info.FullMethod == shoalv1.PeerService_GetChunks_FullMethodName {
			n.Add(1)
		}
		return h(srv, ss)
	})
}

func downloadFolder(t testing.TB, ctx context.Context, registry, target string, cfg client.Config, out string) (*client.Report, error) {
	t.Helper()
	cc, err := grpc.NewClient(registry, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	return client.NewTreeDownload(cfg, &client.Registry{Target: target, Conn: cc}, out).Run(ctx)
}

// A folder of nested folders, an empty file and folder, an executable,
// 1,000 small files and a few large ones arrives identical from five
// peers, with many small files to a request.
func TestFolderArrivesIdentical(t *testing.T) {
	src, total := makeTree(t, 1000)
	var calls atomic.Int64
	c, err := cluster.Start(testCtx(t), cluster.Config{Dir: src, Peers: make([]cluster.PeerSpec, 5), ServerOptions: []grpc.ServerOption{countCalls(&calls)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	out := filepath.Join(t.TempDir(), "copy")
	rep, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
	if _, err := os.Stat(out + ".part"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.part left behind: %v", out, err)
	}
	if rep.Files != 1006 || rep.Size != total-3000 || rep.BytesFetched != rep.Size {
		t.Errorf("report: %d files, size %d, fetched %d; want 1006 files, %d bytes (one duplicate's fetched once)", rep.Files, rep.Size, rep.BytesFetched, total-3000)
	}
	// 1,000 small files in one call each would be over 1,000 calls; the
	// large files' chunks take a few dozen (a few chunks to a call).
	if n := calls.Load(); n > 300 {
		t.Errorf("%d GetChunks calls for %d files", n, rep.Files)
	}
	t.Logf("%d files, %d bytes in %.2f s, %d GetChunks calls", rep.Files, rep.Size, rep.Seconds, calls.Load())

	// A subfolder, by name without its trailing slash.
	sub := filepath.Join(t.TempDir(), "big")
	if _, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "big", client.Config{}, sub); err != nil {
		t.Fatal(err)
	}
	sameTree(t, filepath.Join(src, "big"), sub)

	// Again into the same folder: nothing to fetch.
	rep, err = downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out)
	if err != nil || !rep.AlreadyDone || rep.BytesFetched != 0 {
		t.Fatalf("second run: %+v, %v", rep, err)
	}
}

// A download cancelled part way resumes: the second run fetches only what
// the first did not keep, over every file.
func TestFolderResumesAcrossFiles(t *testing.T) {
	src, _ := makeTree(t, 300)
	st := scannedStore(t, src)
	ctx, cancel := context.WithCancel(testCtx(t))
	var served atomic.Int64
	files := hookFiles{server.StoreFiles{Store: st}, func(i int, b []byte) []byte {
		if served.Add(1) == 200 {
			cancel()
		}
		return b
	}}
	c, err := cluster.Start(testCtx(t), cluster.Config{Peers: []cluster.PeerSpec{{Files: files, Holdings: server.StoreFiles{Store: st}.Holdings}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	out := filepath.Join(t.TempDir(), "copy")
	first, err := downloadFolder(t, ctx, c.Registry.Addr(), "./", client.Config{Peers: 1}, out)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a partial folder at %s: %v", out, err)
	}
	second, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{Peers: 1}, out)
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
	if second.BytesResumed < first.BytesFetched/2 || second.BytesResumed+second.BytesFetched != second.Size || second.BytesFetched >= second.Size {
		t.Errorf("first run fetched %d; second resumed %d and fetched %d of %d", first.BytesFetched, second.BytesResumed, second.BytesFetched, second.Size)
	}
	t.Logf("first run kept %d bytes; the second resumed %d, fetched %d of %d", first.BytesFetched, second.BytesResumed, second.BytesFetched, second.Size)
}

// A folder already at the output with other contents is refused, and
// with Force replaced: files that match are kept, not fetched.
func TestFolderUpdateKeepsMatchingFiles(t *testing.T) {
	src, _ := makeTree(t, 50)
	c, err := cluster.Start(testCtx(t), cluster.Config{Dir: src, Peers: make([]cluster.PeerSpec, 2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	out := filepath.Join(t.TempDir(), "copy")
	if _, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(out, "big", "a.bin")
	data, _ := os.ReadFile(big)
	data[7] ^= 1
	os.WriteFile(big, data, 0o644)
	os.WriteFile(filepath.Join(out, "stray.txt"), []byte("mine"), 0o644)
	if _, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out); !errors.Is(err, client.ErrExists) {
		t.Fatalf("changed folder without Force: %v", err)
	}
	rep, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{Force: true}, out)
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
	if rep.BytesFetched != 3<<20 || rep.FilesReused != rep.Files-3 {
		// The changed file is fetched; the duplicates and the empty file
		// are not counted as reused.
		t.Errorf("fetched %d bytes, reused %d of %d files; want only a.bin's %d bytes fetched", rep.BytesFetched, rep.FilesReused, rep.Files, 3<<20)
	}
	if !bytes.Equal(must(os.ReadFile(filepath.Join(src, "big", "a.bin"))), must(os.ReadFile(big))) {
		t.Error("a.bin not replaced")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// scannedStore opens and hashes the folder dir.
func scannedStore(t *testing.T, dir string) *chunkstore.Store {
	t.Helper()
	st, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
