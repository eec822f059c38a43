// Package interop holds tests that run shoal against programs outside the
// Go module. grpcurl (built from tools/go.mod) runs with the README's test
// command. The Python example peer and downloader need Debian's
// /usr/bin/python3 with python3-grpcio, so their tests build only with
// -tags interop; run that way they fail, never skip, where Python's gRPC is
// missing. `.ci/run` installs it, runs them, and fails if they did not run.
// The package has no code of its own.
package interop
