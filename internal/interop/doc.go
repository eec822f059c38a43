// Package interop holds tests that run shoal against programs outside the
// Go module: the Python example peer and downloader, and grpcurl. It has no
// code of its own.
package interop
