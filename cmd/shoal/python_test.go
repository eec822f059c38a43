//go:build interop

package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalnet/shoal/course"
)

// The course's own Python client (Debian's /usr/bin/python3) downloads
// from shoal's course-compatible server. Run with -tags interop.
func TestCommonPythonClientAgainstServer(t *testing.T) {
	s := startCourse(t, course.ServerConfig{Mode: course.Testing, TimeScale: 0.02, GradingPort: -1})
	out := filepath.Join(t.TempDir(), "py.jpg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr := s.TrackerAddr()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "../../course/testdata/common_client.py", tr.Addr().String(), fmt.Sprint(tr.Port()), "redsox.jpg", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python client: %v\n%s", err, b)
	}
	sameAs(t, out, "redsox.jpg")
}
