package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/shoalnet/shoal/chunkstore"
)

// treeOutput is a folder being written: DIR.part/ until commit moves the
// complete, verified tree to DIR. Every path is opened through an os.Root
// on DIR.part, never through a symbolic link, so nothing is ever written
// outside it; a file's bytes go to every path of the tree that holds the
// same contents.
type treeOutput struct {
	dir, part string
	t         *chunkstore.Tree
	lay       *layout
	cfg       Config
	root      *os.Root   // DIR.part
	rootDir   *os.File   // DIR.part, for openBeneath
	paths     [][]string // per layout file, the tree's paths holding it
	have      []bool     // chunks verified at every path of their file
	resumed   int64      // their bytes
	reused    int        // files taken from an existing DIR
	already   bool       // DIR already holds exactly this tree
	replace   bool       // DIR exists and is replaced at commit (Force)
	unlock    func()     // releases the lock on DIR.part
	unflushed atomic.Int64
}

// openTreeOutput checks DIR, opens DIR.part (creating it), removes from
// it whatever the tree does not hold, and finds the chunks it already
// holds. With Force, files of an existing DIR that match the tree are
// linked into DIR.part instead of fetched.
func openTreeOutput(ctx context.Context, dir string, t *chunkstore.Tree, lay *layout, cfg Config) (*treeOutput, error) {
	o := &treeOutput{dir: dir, part: dir + ".part", t: t, lay: lay, cfg: cfg}
	o.paths = make([][]string, len(lay.files))
	index := make(map[chunkstore.ID]int, len(lay.files))
	for k, m := range lay.files {
		index[m.ID] = k
	}
	for _, e := range t.Entries {
		if k, ok := index[e.File]; ok && !e.Dir && e.Size > 0 {
			o.paths[k] = append(o.paths[k], e.Path)
		}
	}
	parent := filepath.Dir(dir)
	if fi, err := os.Stat(parent); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("output folder %s does not exist", parent)
	}
	var (
		old     *os.Root // an existing DIR
		oldHave [][]bool // what of the tree it holds
	)
	if fi, err := os.Lstat(dir); err == nil {
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			return nil, fmt.Errorf("%s is a symbolic link: shoal never writes through one; remove it or choose another -o", dir)
		case !fi.IsDir():
			return nil, fmt.Errorf("%s exists and is not a folder", dir)
		}
		if old, err = os.OpenRoot(dir); err != nil {
			return nil, fmt.Errorf("open %s: %w", dir, err)
		}
		defer old.Close()
		var extra bool
		oldHave, _, extra = o.scan(ctx, old)
		if !extra && all(oldHave) {
			o.already = true
			if cfg.Serve { // seed it as it is: read-only, never moved
				if o.root, err = os.OpenRoot(dir); err != nil {
					return nil, fmt.Errorf("open %s: %w", dir, err)
				}
				o.have = make([]bool, lay.chunks())
				for i := range o.have {
					o.have[i] = true
				}
				o.resumed = lay.size
			}
			return o, nil
		}
		if !cfg.Force {
			return nil, fmt.Errorf("%s: %w (use --force to replace it; files that match are kept)", dir, ErrExists)
		}
		o.replace = true
	}
	if fi, err := os.Lstat(o.part); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%s exists and is not a folder: shoal keeps a partial folder there; remove it", o.part)
	}
	if err := os.Mkdir(o.part, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", o.part, err)
	}
	unlock, err := lockDir(o.part)
	if err != nil {
		return nil, err
	}
	o.unlock = unlock
	if o.root, err = os.OpenRoot(o.part); err != nil {
		o.close()
		return nil, fmt.Errorf("open %s: %w", o.part, err)
	}
	if o.rootDir, err = o.root.Open("."); err != nil {
		o.close()
		return nil, fmt.Errorf("open %s: %w", o.part, err)
	}
	if err := o.prune(); err != nil {
		o.close()
		return nil, err
	}
	if err := o.makeFolders(); err != nil {
		o.close()
		return nil, err
	}
	have, sizes, _ := o.scan(ctx, o.root)
	if old != nil {
		o.reuse(old, oldHave, have)
	}
	o.have = make([]bool, lay.chunks())
	for k, m := range lay.files {
		for i := range chunkCount(m) {
			if have[k] != nil && have[k][i] {
				o.have[lay.first[k]+i] = true
				_, n := m.ChunkBounds(i)
				o.resumed += int64(n)
			}
		}
		for _, p := range o.paths[k] {
			if sizes[p] > m.Size { // a longer file of an earlier tree
				if err := o.truncate(p, m.Size); err != nil {
					o.close()
					return nil, err
				}
			}
		}
	}
	return o, ctx.Err()
}

// all reports whether every file's every chunk is held.
func all(have [][]bool) bool {
	for _, h := range have {
		if !whole(h) {
			return false
		}
	}
	return true
}

// whole reports whether one file's every chunk is held (nil: none is).
func whole(h []bool) bool {
	if h == nil {
		return false
	}
	for _, ok := range h {
		if !ok {
			return false
		}
	}
	return true
}

// wanted is every path the tree names: its files, empty folders and the
// folders that hold them, each with whether it is a folder.
func (o *treeOutput) wanted() map[string]bool {
	want := make(map[string]bool, len(o.t.Entries))
	for _, e := range o.t.Entries {
		want[e.Path] = e.Dir
		for i := range len(e.Path) {
			if e.Path[i] == '/' {
				want[e.Path[:i]] = true
			}
		}
	}
	return want
}

// prune removes from DIR.part every entry the tree does not name, and
// every symbolic link or other non-regular file: what an earlier run of
// another tree, or anyone else, left there.
func (o *treeOutput) prune() error {
	want := o.wanted()
	var doomed []string
	err := fs.WalkDir(o.root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		isDir, ok := want[p]
		switch {
		case !ok || e.Type()&fs.ModeSymlink != 0:
		case e.IsDir() && isDir, e.Type().IsRegular() && !isDir:
			return nil
		}
		doomed = append(doomed, p)
		if e.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", o.part, err)
	}
	for _, p := range doomed {
		if err := o.root.RemoveAll(p); err != nil {
			return fmt.Errorf("clean %s: %w", o.part, err)
		}
	}
	return nil
}

// scan hashes the files at the tree's paths in root and returns, per
// layout file, the chunks held at every path of it (nil when a path is
// missing), each file's size, and whether root holds anything the tree
// does not (or a file whose executable bit differs).
func (o *treeOutput) scan(ctx context.Context, root *os.Root) (have [][]bool, sizes map[string]int64, extra bool) {
	want := o.wanted()
	sizes = map[string]int64{}
	exec := map[string]bool{}
	fs.WalkDir(root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return nil
		}
		isDir, ok := want[p]
		if !ok || e.Type()&fs.ModeSymlink != 0 || e.IsDir() != isDir || !e.IsDir() && !e.Type().IsRegular() {
			extra = true
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			sizes[p], exec[p] = fi.Size(), fi.Mode()&0o111 != 0
		}
		return nil
	})
	for _, e := range o.t.Entries {
		if size, ok := sizes[e.Path]; !e.Dir && (!ok || size != e.Size || exec[e.Path] != e.Executable) {
			extra = true // missing, or not yet the tree's: not yet done
		}
	}
	have = make([][]bool, len(o.lay.files))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(o.cfg.VerifyWorkers)
	for k, m := range o.lay.files {
		g.Go(func() error {
			var got []bool
			for _, p := range o.paths[k] {
				if _, ok := sizes[p]; !ok {
					return nil
				}
				f, err := root.OpenFile(p, os.O_RDONLY|partFlags&^(os.O_RDWR|os.O_CREATE), 0)
				if err != nil {
					return nil
				}
				h, _ := verifyChunks(ctx, f, m, 1)
				f.Close()
				if got == nil {
					got = h
				} else {
					for i := range got {
						got[i] = got[i] && h[i]
					}
				}
			}
			have[k] = got
			return nil
		})
	}
	g.Wait()
	return have, sizes, extra
}

// reuse links into DIR.part every file of the old DIR that matches the
// tree (oldHave, its scan) and that DIR.part does not hold whole yet, and
// marks it held.
func (o *treeOutput) reuse(old *os.Root, oldHave, have [][]bool) {
	for k, h := range oldHave {
		if !whole(h) || whole(have[k]) {
			continue
		}
		ok := true
		for _, p := range o.paths[k] {
			if err := o.linkFrom(old, p); err != nil {
				ok = false
			}
		}
		if ok {
			have[k] = h
			o.reused++
		}
	}
}

// linkFrom hard-links the old DIR's file at p into DIR.part (or copies it
// where links fail).
func (o *treeOutput) linkFrom(old *os.Root, p string) error {
	if d := filepath.Dir(p); d != "." {
		if err := o.root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	o.root.Remove(p)
	src, dst := filepath.Join(o.dir, p), filepath.Join(o.part, p)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	data, err := old.ReadFile(p)
	if err != nil {
		return err
	}
	return o.root.WriteFile(p, data, 0o644)
}

// truncate cuts the file at p to size.
func (o *treeOutput) truncate(p string, size int64) error {
	f, err := o.root.OpenFile(p, os.O_WRONLY|partFlags&^(os.O_RDWR|os.O_CREATE), 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Join(o.part, p), err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size %s: %w", filepath.Join(o.part, p), err)
	}
	return nil
}

// mode is the permission a new file at entry e is created with (the
// umask applies).
func mode(executable bool) os.FileMode {
	if executable {
		return 0o755
	}
	return 0o644
}

// makeFolders makes every folder that holds a file of the tree, so that
// a file's first write finds its folder.
func (o *treeOutput) makeFolders() error {
	made := map[string]bool{}
	for _, e := range o.t.Entries {
		if d := filepath.Dir(e.Path); d != "." && !made[d] {
			made[d] = true
			if err := o.root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("create folder %s in %s: %w", chunkstore.Clip(d), o.part, err)
			}
		}
	}
	return nil
}

// openAt opens tree path p in DIR.part, never through a symbolic link
// and never outside it.
func (o *treeOutput) openAt(p string, flags int, perm os.FileMode) (PartFile, error) {
	if f, ok, err := openBeneath(o.rootDir, p, flags, perm); ok {
		return f, err
	}
	return o.root.OpenFile(p, flags|partFlags&^(os.O_RDWR|os.O_CREATE), perm)
}

// open opens the file at tree path p for writing, creating it.
func (o *treeOutput) open(p string, executable bool) (PartFile, error) {
	f, err := o.openAt(p, os.O_WRONLY|os.O_CREATE, mode(executable))
	if errors.Is(err, fs.ErrNotExist) { // its folder was removed meanwhile
		if d := filepath.Dir(p); d != "." {
			if err := o.root.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("create folder %s in %s: %w", d, o.part, err)
			}
		}
		f, err = o.openAt(p, os.O_WRONLY|os.O_CREATE, mode(executable))
	}
	if err != nil {
		return nil, fmt.Errorf("create %s in %s: %w", chunkstore.Clip(p), o.part, err)
	}
	return f, nil
}

// executable reports whether the tree marks path p executable.
func (o *treeOutput) executable(p string) bool {
	k, ok := findEntry(o.t, p)
	return ok && o.t.Entries[k].Executable
}

// findEntry finds path p in the tree's canonical order.
func findEntry(t *chunkstore.Tree, p string) (int, bool) {
	lo, hi := 0, len(t.Entries)
	for lo < hi {
		mid := (lo + hi) / 2
		if t.Entries[mid].Path < p {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(t.Entries) && t.Entries[lo].Path == p
}

// writeChunk writes verified chunk g at every path of its file.
func (o *treeOutput) writeChunk(g int, pieces [][]byte) error {
	k, off, n := o.lay.bounds(g)
	for _, p := range o.paths[k] {
		f, err := o.open(p, o.executable(p))
		if err != nil {
			return err
		}
		err = writePieces(f, pieces, off, o.cfg.WriteSize)
		if err == nil && o.cfg.WritebackEvery > 0 && o.unflushed.Add(int64(n)) >= o.cfg.WritebackEvery {
			o.unflushed.Store(0)
			startWriteback(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(o.part, p), err)
		}
	}
	return nil
}

// readChunk reads verified chunk g into buf, for serving.
func (o *treeOutput) readChunk(g int, buf []byte) ([]byte, error) {
	k, off, n := o.lay.bounds(g)
	f, err := o.openAt(o.paths[k][0], os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.ReadAt(buf[:n], off); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// partPath is DIR.part.
func (o *treeOutput) partPath() string { return o.part }

// commit completes DIR.part (empty files and folders, executable bits),
// syncs it, and moves it to DIR; a DIR being replaced is moved aside
// first and removed after.
func (o *treeOutput) commit(ctx context.Context) error {
	for _, e := range o.t.Entries {
		if err := o.finishEntry(e); err != nil {
			return fmt.Errorf("%w: %w", ErrDisk, err)
		}
	}
	if o.cfg.VerifyOutput {
		have, _, extra := o.scan(ctx, o.root)
		if extra || !all(have) {
			return fmt.Errorf("%w: %s does not match %s after writing", ErrDisk, o.part, o.t.ID)
		}
	}
	if err := syncTree(o.root); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrDisk, o.part, err)
	}
	var aside string
	if o.replace {
		var b [6]byte
		rand.Read(b[:])
		aside = o.dir + ".old-" + hex.EncodeToString(b[:])
		if err := os.Rename(o.dir, aside); err != nil {
			return fmt.Errorf("%w: move %s aside: %w", ErrDisk, o.dir, err)
		}
	}
	if err := os.Rename(o.part, o.dir); err != nil {
		if aside != "" {
			os.Rename(aside, o.dir)
		}
		return fmt.Errorf("%w: %w", ErrDisk, err)
	}
	if aside != "" {
		os.RemoveAll(aside)
	}
	if d, err := os.Open(filepath.Dir(o.dir)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// finishEntry makes entry e as the tree says: an empty folder or file
// created, a file's executable bit set or cleared.
func (o *treeOutput) finishEntry(e chunkstore.TreeEntry) error {
	if e.Dir {
		return o.root.MkdirAll(e.Path, 0o755)
	}
	if e.Size == 0 {
		f, err := o.open(e.Path, e.Executable)
		if err != nil {
			return err
		}
		return f.Close()
	}
	fi, err := o.root.Lstat(e.Path)
	if err != nil {
		return err
	}
	m := fi.Mode().Perm()
	switch {
	case e.Executable && m&0o111 == 0:
		return o.root.Chmod(e.Path, m|(m&0o444)>>2)
	case !e.Executable && m&0o111 != 0:
		return o.root.Chmod(e.Path, m&^0o111)
	}
	return nil
}

// close releases DIR.part.
func (o *treeOutput) close() {
	if o.rootDir != nil {
		o.rootDir.Close()
		o.rootDir = nil
	}
	if o.root != nil {
		o.root.Close()
		o.root = nil
	}
	if o.unlock != nil {
		o.unlock()
		o.unlock = nil
	}
}
