package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// scenario4 downloads folders from 5 local sources:
//
//	(a) many small files: shoal get of the folder against aria2c -i (each
//	    file's 5 nginx mirrors on one line) and rsync from an rsync daemon;
//	(b) a large tree (8 large files and 1,000 small ones) against shoal's
//	    own time for one file of the same size, in the same rounds;
//	(c) a tree of many entries, for shoal's peak memory.
func scenario4(ctx context.Context, o *options) ([]row, error) {
	base := filepath.Join(o.dir, "s4")
	src, out := filepath.Join(base, "src"), filepath.Join(base, "out")
	if err := mkdirs(src, out); err != nil {
		return nil, err
	}
	defer os.RemoveAll(base)
	logf("scenario 4: writing %d files of %d KiB, a %d MiB tree and a %d-entry tree", o.files4, o.small4>>10, o.size4>>20, o.entries4)
	smallSize, err := writeTree(filepath.Join(src, "small"), o.files4, o.small4, 0, 0)
	if err != nil {
		return nil, err
	}
	large := (o.size4 - 1000*4096) / 8
	bigSize, err := writeTree(filepath.Join(src, "big"), 1000, 4096, 8, large)
	if err != nil {
		return nil, err
	}
	if err := writeRandom(filepath.Join(src, "one.bin"), bigSize); err != nil {
		return nil, err
	}
	manySize, err := writeTree(filepath.Join(src, "many"), o.entries4, 1024, 0, 0)
	if err != nil {
		return nil, err
	}

	ng, ports, err := startNginx(filepath.Join(base, "nginx"), src, 5)
	if err != nil {
		return nil, err
	}
	defer ng.stop()
	rs, rsPort, err := startRsync(filepath.Join(base, "rsyncd"), src)
	if err != nil {
		return nil, err
	}
	defer rs.stop()
	cl, reg, err := startCluster(o, src, 5, 0)
	if err != nil {
		return nil, err
	}
	defer cl.stop()

	list := filepath.Join(base, "aria2-input.txt")
	if err := aria2Input(list, filepath.Join(src, "small"), filepath.Join(out, "small"), ports); err != nil {
		return nil, err
	}
	dst := filepath.Join(out, "small")
	a, err := alternate("scenario 4a", o.pairs,
		folderRun(ctx, dst, o.files4, o.shoal, "get", "small/", "--registry", reg, "-o", dst, "--json"),
		folderRun(ctx, dst, o.files4, "aria2c", "-i", list, "-j", "16", "--file-allocation=none", "--allow-overwrite=true",
			"--auto-file-renaming=false", "--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
			"--enable-dht=false", "--bt-enable-lpd=false"),
		folderRun(ctx, dst, o.files4, "rsync", "-a", fmt.Sprintf("rsync://127.0.0.1:%d/src/small/", rsPort), dst+"/"))
	if err != nil {
		return nil, err
	}
	bigDst, oneDst := filepath.Join(out, "big"), filepath.Join(out, "one.bin")
	b, err := alternate("scenario 4b", o.pairs,
		folderRun(ctx, bigDst, 1008, o.shoal, "get", "big/", "--registry", reg, "-o", bigDst, "--json"),
		download(ctx, oneDst, bigSize, o.shoal, "get", "one.bin", "--registry", reg, "-o", oneDst, "--json"))
	if err != nil {
		return nil, err
	}
	manyDst := filepath.Join(out, "many")
	c, err := alternate("scenario 4c", 1,
		folderRun(ctx, manyDst, o.entries4, o.shoal, "get", "many/", "--registry", reg, "-o", manyDst, "--json"))
	if err != nil {
		return nil, err
	}
	small := fmt.Sprintf("%d x %d KiB", o.files4, o.small4>>10)
	return []row{
		{scenario: "4a " + small, tool: "shoal get DIR, 5 peers", runs: a[0], size: smallSize, note: "syncfs before rename; verifies every file"},
		{scenario: "4a " + small, tool: "aria2c -i -j16, 5 nginx mirrors", runs: a[1], size: smallSize, ratio: ratios(a[0], a[1]), note: "no fsync, no verification"},
		{scenario: "4a " + small, tool: "rsync -a, rsync daemon", runs: a[2], size: smallSize, ratio: ratios(a[0], a[2]), note: "one source; no fsync; checks a whole-file sum"},
		{scenario: "4b 8 large + 1,000 small", tool: "shoal get DIR, 5 peers", runs: b[0], size: bigSize, note: "the tree"},
		{scenario: "4b 8 large + 1,000 small", tool: "shoal get FILE, 5 peers", runs: b[1], size: bigSize, ratio: ratios(b[0], b[1]), note: "one file of the tree's size"},
		{scenario: fmt.Sprintf("4c %d entries", o.entries4), tool: "shoal get DIR, 5 peers", runs: c[0], size: manySize, note: "peak RSS is the figure"},
	}, nil
}

// writeTree writes files small files of size bytes in 100 folders, and
// large files of largeSize bytes, under dir; it returns the bytes written.
func writeTree(dir string, files int, size int64, largeFiles int, largeSize int64) (int64, error) {
	var total int64
	buf := make([]byte, size)
	seed := uint64(len(dir))*0x9e3779b97f4a7c15 | 1
	for k := range files {
		if k%100 == 0 {
			if err := mkdirs(filepath.Join(dir, fmt.Sprintf("d%03d", k/100))); err != nil {
				return 0, err
			}
		}
		for i := range buf {
			seed ^= seed << 13
			seed ^= seed >> 7
			seed ^= seed << 17
			buf[i] = byte(seed)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%03d/f%06d.bin", k/100, k)), buf, 0o644); err != nil {
			return 0, err
		}
		total += size
	}
	for k := range largeFiles {
		if err := writeRandom(filepath.Join(dir, fmt.Sprintf("large-%d.bin", k)), largeSize+int64(k)); err != nil {
			return 0, err
		}
		total += largeSize + int64(k)
	}
	return total, nil
}

// folderRun times argv, which writes a folder of files files at dst, and
// removes the folder.
func folderRun(ctx context.Context, dst string, files int, argv ...string) func() (result, error) {
	return func() (result, error) {
		r, err := timed(ctx, argv...)
		if err != nil {
			return r, err
		}
		n := 0
		filepath.WalkDir(dst, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				n++
			}
			return nil
		})
		if n != files {
			return r, fmt.Errorf("%s: %d files at %s, want %d", argv[0], n, dst, files)
		}
		if err := os.RemoveAll(dst); err != nil {
			return r, err
		}
		return r, dropOutput()
	}
}

// aria2Input writes an aria2c input file: one line per file of src with
// its URL on each nginx port (mirrors of one file), and where to write it.
func aria2Input(list, src, dst string, ports []int) error {
	var b strings.Builder
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Dir(src), p)
		var urls []string
		for _, port := range ports {
			urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/%s", port, filepath.ToSlash(rel)))
		}
		r, _ := filepath.Rel(src, p)
		fmt.Fprintf(&b, "%s\n  dir=%s\n  out=%s\n", strings.Join(urls, "\t"), dst, r)
		return nil
	})
	if err != nil {
		return err
	}
	return os.WriteFile(list, []byte(b.String()), 0o644)
}

// startRsync runs an rsync daemon on a free loopback port with one
// read-only module, src, at root.
func startRsync(prefix, root string) (*proc, int, error) {
	if err := mkdirs(prefix); err != nil {
		return nil, 0, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, 0, err
	}
	conf := fmt.Sprintf(`use chroot = no
pid file = %[1]s/rsyncd.pid
lock file = %[1]s/rsyncd.lock
[src]
  path = %[2]s
  read only = yes
  uid = %[3]d
  gid = %[4]d
`, prefix, root, os.Getuid(), os.Getgid())
	cf := filepath.Join(prefix, "rsyncd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, 0, err
	}
	p, err := start("rsync --daemon", "rsync", "--daemon", "--no-detach", "--config", cf, "--address", "127.0.0.1", "--port", fmt.Sprint(ports[0]))
	if err != nil {
		return nil, 0, err
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", ports[0]), 10*time.Second); err != nil {
		p.stop()
		return nil, 0, fmt.Errorf("rsync daemon: %w", err)
	}
	return p, ports[0], nil
}
