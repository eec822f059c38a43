//go:build !linux

package client

// startWriteback does nothing where sync_file_range is missing: the fsync
// before the rename writes everything.
func startWriteback(PartFile) {}
