package server

import (
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Batches for a member whose send is under way wait behind it, in order,
// within maxBacklog; a failed send drops what waits (push-pull repairs it).
func TestBatchesWaitBehindASendUnderWay(t *testing.T) {
	release := make(chan error)
	var got []string
	g := &Gossip{sending: map[string]*memberSend{}, log: slog.New(slog.DiscardHandler)}
	g.sendMsg = func(_ *memberlist.Node, m []byte) error {
		if err := <-release; err != nil {
			return err
		}
		got = append(got, string(m))
		return nil
	}
	n := &memberlist.Node{Name: "b"}
	done := g.send(n, [][]byte{[]byte("missed-1"), []byte("missed-2")})
	if done == nil {
		t.Fatal("the first send did not start")
	}
	if g.send(n, [][]byte{[]byte("batch-1")}) != nil || g.send(n, [][]byte{[]byte("batch-2")}) != nil {
		t.Fatal("a second send to the same member started beside the first")
	}
	big := make([]byte, maxBacklog)
	g.send(n, [][]byte{big}) // past the bound: dropped
	for range 4 {
		select {
		case release <- nil:
		case <-time.After(10 * time.Second):
			t.Fatalf("the send stopped early; delivered %q", got)
		}
	}
	<-done
	if want := []string{"missed-1", "missed-2", "batch-1", "batch-2"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	if g.sending["b"] != nil {
		t.Fatal("the member is still marked as being sent to")
	}

	// A failure ends the send and what waits behind it.
	got = nil
	done = g.send(n, [][]byte{[]byte("first")})
	g.send(n, [][]byte{[]byte("waiting")})
	release <- errors.New("connection refused")
	<-done
	if len(got) != 0 || g.sending["b"] != nil {
		t.Fatalf("after a failure: delivered %q, still sending %v", got, g.sending["b"] != nil)
	}
	// The next batch starts a new send.
	if done = g.send(n, [][]byte{[]byte("next")}); done == nil {
		t.Fatal("no send after a failed one")
	}
	release <- nil
	<-done
	if !slices.Equal(got, []string{"next"}) {
		t.Fatalf("delivered %q, want [next]", got)
	}
}

// A member seen for the first time is sent the changes made here lately,
// as one coming back is: announces made before this registry's join
// succeeded were flushed to no one.
func TestNewMemberGetsRecentChanges(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	got := make(chan []byte, 4)
	g := &Gossip{name: "a", leases: l, sending: map[string]*memberSend{}, failed: map[string]failedMember{},
		recent: map[string]recentChange{}, batch: map[string]Change{}, pending: map[string]*entryBroadcast{},
		sync: make(chan string, 4), log: slog.New(slog.DiscardHandler)}
	g.sendMsg = func(_ *memberlist.Node, m []byte) error { got <- m; return nil }
	p := testPeer(1, 1)
	g.recent[p.ID] = recentChange{Change: Change{LeasedPeer: LeasedPeer{Peer: p, Expires: time.Now().Add(time.Minute)}, Full: true}, at: time.Now()}
	(*gossipEvents)(g).NotifyJoin(&memberlist.Node{Name: "b"})
	select {
	case m := <-got:
		entries, _, err := scanBatch(m[1:])
		if err != nil || len(entries) != 1 || entries[0].id != p.ID {
			t.Fatalf("the new member was sent %d entries (%v), want %s", len(entries), err, p.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new member was sent nothing")
	}
	if len(g.sync) != 1 {
		t.Fatal("no push-pull asked for with a new member")
	}
}
