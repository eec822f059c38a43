//go:build !linux

package client

// startWriteback does nothing where sync_file_range is missing: the fsync
// before the rename writes everything.
func startWriteback(PartFile) {}

// writeVector is not available: the caller writes the pieces one by one.
func writeVector(PartFile, [][]byte, int64) (int, bool, error) { return 0, false, nil }
