package server

import (
	"sync"
	"time"
)

// callLog limits the log lines of failed calls to one a second per client
// IP: the line that is written counts the calls left out since the last,
// so a client failing 3,000 calls writes a few lines, not 3,000.
type callLog struct {
	mu      sync.Mutex
	clients map[string]*callLogEntry // by client IP, at most maxLogClients; guarded by mu
}

type callLogEntry struct {
	last       time.Time // when a line was last written
	suppressed int       // calls left out since
}

// maxLogClients bounds the clients callLog remembers; past it, it forgets
// them all (each then writes at most one line more).
const maxLogClients = 10_000

func newCallLog() *callLog { return &callLog{clients: map[string]*callLogEntry{}} }

// allow reports whether a failed call of ip at now gets a log line, and
// how many were left out before it.
func (c *callLog) allow(ip string, now time.Time) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.clients[ip]
	if e == nil {
		if len(c.clients) >= maxLogClients {
			clear(c.clients)
		}
		e = &callLogEntry{}
		c.clients[ip] = e
	}
	if !e.last.IsZero() && now.Sub(e.last) < time.Second {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// maxLogText is the most bytes of any one text a log line quotes: errors
// quote what clients sent.
const maxLogText = 256

// clipFields cuts every text value of a key-value list to maxLogText.
func clipFields(fields []any) []any {
	for i := 1; i < len(fields); i += 2 {
		switch v := fields[i].(type) {
		case string:
			fields[i] = clipText(v)
		case error:
			fields[i] = clipText(v.Error())
		}
	}
	return fields
}

func clipText(s string) string {
	if len(s) <= maxLogText {
		return s
	}
	return s[:maxLogText] + "..."
}
