//go:build !linux

package client

import (
	"io/fs"
	"os"
)

// partFlags open the part file.
const partFlags = os.O_RDWR | os.O_CREATE

// lockPart does not lock where flock is missing: two downloads to one
// output are not told apart.
func lockPart(string) (func(), error) { return func() {}, nil }

// lockDir does not lock either.
func lockDir(string) (func(), error) { return func() {}, nil }

// syncTree syncs root's files one by one.
func syncTree(root *os.Root) error {
	return fs.WalkDir(root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

// startWriteback does nothing where sync_file_range is missing: the fsync
// before the rename writes everything.
func startWriteback(PartFile) {}

// writeVector is not available: the caller writes the pieces one by one.
func writeVector(PartFile, [][]byte, int64) (int, bool, error) { return 0, false, nil }

// directWriter is not available: writes go through the page cache.
type directWriter struct{}

func openDirect(PartFile, string, int) *directWriter { return nil }

func (*directWriter) write([][]byte, int64) (bool, error) { return false, nil }

func (*directWriter) close() error { return nil }

// openBeneath is not available: the caller opens through an os.Root.
func openBeneath(*os.File, string, int, os.FileMode) (PartFile, bool, error) { return nil, false, nil }
