package course

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestPeersGoToTheFastestPort(t *testing.T) {
	tr := &Tracker{Name: "f", Timeout: time.Second}
	tr.init()
	slow, fast, fresh := netip.MustParseAddrPort("127.0.0.1:1001"), netip.MustParseAddrPort("127.0.0.1:1002"), netip.MustParseAddrPort("127.0.0.1:1003")
	tr.known = []netip.AddrPort{slow, fast}
	tr.observe(slow, 2800*time.Millisecond)
	tr.observe(fast, 1100*time.Millisecond)
	got := tr.Peers(nil, 3)
	for _, p := range got {
		if p.addr != fast {
			t.Fatalf("connection to %s, want all on the fast port %s", p.addr, fast)
		}
	}
	if ids := []string{got[0].ID(), got[1].ID(), got[2].ID()}; strings.Join(ids, " ") != "127.0.0.1:1002#0 127.0.0.1:1002#1 127.0.0.1:1002#2" {
		t.Fatalf("ids %v", ids)
	}
	// An untried port is preferred to a measured slow one ...
	tr.known = []netip.AddrPort{slow, fresh}
	if p := tr.Peers(nil, 1); len(p) != 1 || p[0].addr != fresh {
		t.Fatalf("want the untried port, got %v", p)
	}
	rate, ok := tr.Forecast(nil)
	if !ok || rate < 0.99*BlockSize/untriedGuess.Seconds() {
		t.Fatalf("forecast %v %v", rate, ok)
	}
	// ... and a port is not used past maxPerPort connections.
	var used []string
	for k := range maxPerPort {
		used = append(used, fresh.String()+"#"+string(rune('0'+k%10)))
	}
	tr.known = []netip.AddrPort{fresh}
	if p := tr.Peers(used, 1); len(p) != 0 {
		t.Fatalf("a port with %d connections tried got another", maxPerPort)
	}
}
