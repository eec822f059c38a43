package chunkstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// stamp identifies one version of a file on disk.
type stamp struct {
	Size  int64  // bytes
	Mtime int64  // modification time, ns since the epoch
	Ctime int64  // change time, ns since the epoch (0 where unknown)
	Ino   uint64 // inode number (0 where unknown)
	Dev   uint64 // device number (0 where unknown)
}

// entry is one hashed file.
type entry struct {
	m     *Manifest
	stamp stamp // the version m was computed from
}

// Config configures a Store.
type Config struct {
	// Dir is the shared folder. Only regular files below it are served;
	// names starting with '.' are skipped.
	Dir string
	// IndexPath is where hashes are kept across restarts. Empty disables
	// the index: every start rehashes everything.
	IndexPath string
	// Workers is how many goroutines hash at once; 0 means GOMAXPROCS.
	Workers int
	// Logger receives one line per file hashed and per change noticed;
	// nil discards.
	Logger *slog.Logger
	// OnChange, if set, is called when a file is withdrawn because it
	// changed on disk.
	OnChange func()
}

// Store serves the files of one folder by content id or by name.
type Store struct {
	cfg  Config
	root *os.Root

	mu        sync.RWMutex
	byID      map[ID]*entry     // guarded by mu
	byName    map[string]*entry // guarded by mu
	exec      map[string]bool   // files with an execute bit, as of the last scan; guarded by mu
	emptyDirs []string          // folders holding no servable file, as of the last scan; guarded by mu

	treeMu      sync.Mutex
	treeDirs    map[TreeID]Folder // folder of each tree id, for treeVersion; guarded by treeMu
	treeVersion uint64            // the version treeDirs was computed at; guarded by treeMu

	changed chan struct{} // signalled when a file is withdrawn; buffered 1

	scanMu sync.Mutex // one scan at a time

	readyOnce sync.Once
	ready     chan struct{} // closed when the first scan finishes

	hashed  atomic.Int64  // files hashed, not taken from the index
	version atomic.Uint64 // bumped whenever a file becomes servable or stops being
}

// Open opens the store for cfg.Dir. It reads the index but hashes nothing:
// call Scan (typically in a goroutine) to hash the folder.
func Open(cfg Config) (*Store, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("open shared folder: %w", err)
	}
	s := &Store{
		cfg:     cfg,
		root:    root,
		byID:    map[ID]*entry{},
		byName:  map[string]*entry{},
		changed: make(chan struct{}, 1),
		ready:   make(chan struct{}),
	}
	return s, nil
}

// Close releases the folder.
func (s *Store) Close() error { return s.root.Close() }

// Ready is closed once the first Scan has finished.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Hashed reports how many files this store hashed itself rather than
// taking their manifests from the index.
func (s *Store) Hashed() int {
	return int(s.hashed.Load())
}

// Scan walks the folder, reuses index entries whose file is unchanged,
// hashes the others in parallel, drops files that are gone, and saves the
// index. Files become servable as they are hashed.
func (s *Store) Scan(ctx context.Context) error {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	defer s.readyOnce.Do(func() { close(s.ready) })

	idx := loadIndex(s.cfg.IndexPath, s.cfg.Logger)
	seen := map[string]bool{}
	exec := map[string]bool{}
	var dirs []string
	var todo []string
	err := fs.WalkDir(s.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			s.cfg.Logger.Warn("skip unreadable path", "name", name, "err", err)
			return nil
		}
		if name != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() && name != "." && ValidPath(name) == nil {
			dirs = append(dirs, name)
		}
		if !d.Type().IsRegular() {
			return nil // directories, symlinks, devices: never served
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		seen[name] = true
		if fi.Mode()&0o111 != 0 {
			exec[name] = true
		}
		st := stampOf(fi)
		s.mu.RLock()
		cur := s.byName[name]
		s.mu.RUnlock()
		if cur != nil && cur.stamp == st {
			return nil
		}
		if e, ok := idx[name]; ok && e.stamp == st {
			s.put(name, e)
			return nil
		}
		todo = append(todo, name)
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("scan %s: %w", s.cfg.Dir, err)
	}
	s.mu.Lock()
	for name, e := range s.byName {
		if !seen[name] {
			s.dropLocked(name, e)
		}
	}
	s.exec = exec
	full := ancestors(func(yield func(string) bool) {
		for name := range seen {
			if !yield(name) {
				return
			}
		}
	})
	s.emptyDirs = s.emptyDirs[:0]
	for _, d := range dirs {
		if !full[d] {
			s.emptyDirs = append(s.emptyDirs, d)
		}
	}
	s.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2) // files at once; each file also hashes its chunks in parallel
	for _, name := range todo {
		g.Go(func() error {
			e, err := s.hashFile(gctx, name)
			if err != nil {
				if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					return err
				}
				s.cfg.Logger.Warn("skip file", "name", name, "err", err)
				return nil
			}
			s.put(name, e)
			s.hashed.Add(1)
			s.cfg.Logger.Debug("hashed", "name", name, "size", e.m.Size, "id", e.m.ID)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return s.saveIndex()
}

// put makes e servable under name, replacing what was there.
func (s *Store) put(name string, e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version.Add(1)
	if old := s.byName[name]; old != nil {
		s.dropLocked(name, old)
	}
	s.byName[name] = e
	if _, dup := s.byID[e.m.ID]; !dup {
		s.byID[e.m.ID] = e
	}
}

// dropLocked withdraws e; s.mu must be held.
func (s *Store) dropLocked(name string, e *entry) {
	s.version.Add(1)
	if s.byName[name] == e {
		delete(s.byName, name)
	}
	if s.byID[e.m.ID] == e {
		delete(s.byID, e.m.ID)
		for _, other := range s.byName { // another copy of the same bytes
			if other.m.ID == e.m.ID {
				s.byID[e.m.ID] = other
				break
			}
		}
	}
}

// hashFile computes the manifest of one file.
func (s *Store) hashFile(ctx context.Context, name string) (*entry, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	before := stampOf(fi)
	m, err := HashReaderAt(ctx, f, fi.Size(), s.cfg.Workers)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", name, err)
	}
	fi, err = f.Stat()
	if err != nil {
		return nil, err
	}
	if stampOf(fi) != before {
		return nil, fmt.Errorf("hash %s: %w", name, ErrChanged)
	}
	m.Name = name
	return &entry{m: m, stamp: before}, nil
}

// HashReaderAt computes the manifest of size bytes read from r, hashing
// chunks on up to workers goroutines. The name is left empty.
func HashReaderAt(ctx context.Context, r io.ReaderAt, size int64, workers int) (*Manifest, error) {
	cs := ChunkSizeFor(size)
	n := int((size + int64(cs) - 1) / int64(cs))
	m := &Manifest{Size: size, ChunkSize: cs, Hashes: make([]Hash, n)}
	workers = max(1, min(workers, n))
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			buf := make([]byte, cs)
			for i := w; i < n; i += workers {
				if err := ctx.Err(); err != nil {
					return err
				}
				off, l := m.ChunkBounds(i)
				if _, err := r.ReadAt(buf[:l], off); err != nil && !(errors.Is(err, io.EOF) && l == 0) {
					return fmt.Errorf("read chunk %d: %w", i, err)
				}
				m.Hashes[i] = sha256.Sum256(buf[:l])
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	m.ID = ComputeID(m.Size, m.ChunkSize, m.Hashes)
	return m, nil
}

// Manifest returns the manifest of the file with content id id.
func (s *Store) Manifest(id ID) (*Manifest, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return e.m, nil
}

// ManifestByName returns the manifest of the file at name, a '/'-separated
// path relative to the folder. Names that leave the folder are not found.
func (s *Store) ManifestByName(name string) (*Manifest, error) {
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("%s: %w", Clip(name), ErrNotFound)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", Clip(name), ErrNotFound)
	}
	return e.m, nil
}

// List returns the manifests of every servable file, sorted by name.
func (s *Store) List() []*Manifest {
	s.mu.RLock()
	out := make([]*Manifest, 0, len(s.byName))
	for _, e := range s.byName {
		out = append(out, e.m)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// withdraw stops serving e until the next Scan rehashes its file.
func (s *Store) withdraw(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byName[e.m.Name] == e {
		s.cfg.Logger.Info("file changed on disk; withdrawn until rehashed", "name", e.m.Name, "id", e.m.ID)
		s.dropLocked(e.m.Name, e)
		if s.cfg.OnChange != nil {
			s.cfg.OnChange()
		}
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// Watch rescans the folder every interval, and at once after a file was
// withdrawn because it changed, until ctx ends; after a rescan that added,
// changed or removed a file it calls changed (if not nil), so that what
// the folder holds is announced at once. Scan errors are logged. It is the
// one way shoal follows a folder: serve, cluster and the course server.
func (s *Store) Watch(ctx context.Context, interval time.Duration, changed func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v := s.version.Load()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.changed:
		}
		if err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("rescan failed", "err", err)
		}
		if changed != nil && s.version.Load() != v {
			changed()
		}
	}
}
