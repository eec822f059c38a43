package course

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// emfileListener fails its first Accepts as a process out of file
// descriptors does, then accepts for real.
type emfileListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// A port whose Accept fails for want of file descriptors keeps accepting
// once they are back: the server never wedges.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	s := startServer(t, ServerConfig{Dir: "testdata", Mode: Unlimited, GradingPort: -1, Ports: 1})
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &emfileListener{Listener: real}
	lis.fails.Store(5)
	s.mu.Lock()
	pause := s.ports[s.advertised[0]].pause
	s.ports[1] = &peerPort{lis: lis, pause: pause}
	s.mu.Unlock()
	s.wg.Go(func() { s.acceptLoop(1, lis) })
	c, err := net.DialTimeout("tcp", real.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, Request{Name: "test.jpg", Kind: KindBlock, Block: 0}.String()+"\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "200") {
		t.Fatalf("after 5 EMFILEs: %q, %v", line, err)
	}
	if lis.fails.Load() >= 0 {
		t.Fatal("the failing Accepts were not met")
	}
}

// A connection that sends nothing is closed after IdleTimeout, on peer
// ports and on the grading port.
func TestIdleConnectionsTimeOut(t *testing.T) {
	s := startServer(t, ServerConfig{Dir: "testdata", Mode: Unlimited, Ports: 1, GradingPort: 0, IdleTimeout: 100 * time.Millisecond})
	for _, addr := range []string{s.FixedAddr().String(), s.GradingAddr().String()} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("%s: an idle connection was not closed by the server: %v", addr, err)
		}
	}
}

// Grading sessions expire and are bounded.
func TestGradingSessionsExpire(t *testing.T) {
	s := startServer(t, ServerConfig{Dir: "testdata", Mode: Unlimited, Ports: 1, GradingPort: -1, SessionTTL: time.Hour})
	for i := range maxSessions + 10 {
		s.openSession(strings.Repeat("1", 1+i%17) + string(rune('a'+i%26)) + string(rune(i)))
	}
	s.mu.Lock()
	n := len(s.sessions)
	s.mu.Unlock()
	if n > maxSessions {
		t.Errorf("%d sessions kept, at most %d", n, maxSessions)
	}
	s.cfg.SessionTTL = time.Nanosecond
	if ses := s.session(strings.Repeat("1", 1) + "a" + string(rune(0))); ses != nil {
		t.Error("a session outlived its TTL")
	}
}
