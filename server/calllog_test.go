package server

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCallLogLimitsEachClient(t *testing.T) {
	c := newCallLog()
	t0 := time.Unix(1000, 0)
	written := 0
	for i := range 3000 {
		now := t0.Add(time.Duration(i) * time.Millisecond) // 3,000 calls in 3 s
		if ok, _ := c.allow("10.0.0.1", now); ok {
			written++
		}
	}
	if written > 3 {
		t.Errorf("%d lines for 3,000 failed calls in 3 s; want at most 3", written)
	}
	ok, n := c.allow("10.0.0.1", t0.Add(10*time.Second))
	if !ok || n == 0 {
		t.Errorf("the next line says %d left out; want the count", n)
	}
	if ok, _ := c.allow("10.0.0.2", t0); !ok {
		t.Error("another client was silenced")
	}
}

func TestClipFields(t *testing.T) {
	long := strings.Repeat("x", 1_000_000)
	f := clipFields([]any{"grpc.error", errors.New(long), "name", long, "n", 3})
	for i := 1; i < len(f); i += 2 {
		if s, ok := f[i].(string); ok && len(s) > maxLogText+3 {
			t.Errorf("%v: %d bytes logged", f[i-1], len(s))
		}
	}
	if f[5] != 3 {
		t.Error("a number was changed")
	}
}
