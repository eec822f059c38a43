package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/shoalnet/shoal/chunkstore"
)

// outputPath is where a download of the file named name ('/'-separated, as
// the network names it) is written: at out; inside out under the name's
// last element when out is a folder or ends in a separator; in the current
// folder when out is empty. fallback stands in for a name a stranger should
// not choose: no file name at all, a dot-file, a name starting with '-', or
// one with control characters or a backslash.
func outputPath(out, name, fallback string) string {
	base := path.Base(name)
	if !safeName(base) {
		base = fallback
	}
	if out != "" && !os.IsPathSeparator(out[len(out)-1]) {
		if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
			return out
		}
	}
	return filepath.Join(out, base)
}

// safeName reports whether a peer's file name may be used as it is.
func safeName(base string) bool {
	if base == "" || base == "." || base == ".." || base == "/" || len(base) > 255 {
		return false
	}
	if base[0] == '.' || base[0] == '-' {
		return false
	}
	for _, r := range base {
		if r < 0x20 || r == 0x7f || r == '\\' || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// parentsPath is where --parents writes a file the network names name:
// name's folders kept under out (the current folder when empty), created
// as needed. A name that could leave out is refused.
func parentsPath(out, name string) (string, error) {
	if err := chunkstore.ValidPath(name); err != nil {
		return "", fmt.Errorf("--parents: %w", err)
	}
	for elem := range strings.SplitSeq(name, "/") {
		if !safeName(elem) {
			return "", fmt.Errorf("--parents: %s has a part a stranger should not choose (%s)", chunkstore.Clip(name), chunkstore.Clip(elem))
		}
	}
	p := filepath.Join(out, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, nil
}
