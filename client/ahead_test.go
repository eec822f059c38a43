package client_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/cluster"
)

// countingConn counts the registry's Lookup calls.
type countingConn struct {
	*grpc.ClientConn
	mu      sync.Mutex
	lookups int
}

func (c *countingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if method == shoalv1.RegistryService_Lookup_FullMethodName {
		c.mu.Lock()
		c.lookups++
		c.mu.Unlock()
	}
	return c.ClientConn.Invoke(ctx, method, args, reply, opts...)
}

// openConns is a dialer that counts the connections it made that are
// still open.
type openConns struct {
	mu      sync.Mutex
	open    int
	changed chan struct{} // closed and replaced when open changes; guarded by mu
}

// add changes the count by n.
func (o *openConns) add(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.open += n
	if o.changed != nil {
		close(o.changed)
	}
	o.changed = make(chan struct{})
}

// left is how many connections are still open once all are closed or
// within 5 s: a connection still being made when its ClientConn closes
// is closed when it is made.
func (o *openConns) left() int {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		o.mu.Lock()
		n, ch := o.open, o.changed
		o.mu.Unlock()
		if n == 0 || ch == nil {
			return n
		}
		select {
		case <-ch:
		case <-t.C:
			return n
		}
	}
}

type countedConn struct {
	net.Conn
	once sync.Once
	c    *openConns
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.c.add(-1) })
	return c.Conn.Close()
}

func (o *openConns) dial(ctx context.Context, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	o.add(1)
	return &countedConn{Conn: conn, c: o}, nil
}

func registryConn(t *testing.T, c *cluster.Cluster) *countingConn {
	t.Helper()
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &countingConn{ClientConn: cc}
}

// The holders connected to while the manifest is fetched are the first
// peers: one lookup, and the peers' connections overlap the manifest's
// round trips instead of following them.
func TestFirstPeersAreThoseConnectedForTheManifest(t *testing.T) {
	f := newFixture(t, 4<<20)
	c := f.start(t, make([]cluster.PeerSpec, 5), nil)
	reg := registryConn(t, c)
	var dialed openConns
	opts := append(client.DialOptions(), grpc.WithContextDialer(dialed.dial))
	out := filepath.Join(t.TempDir(), "out")
	rep, err := client.NewDownload(client.Config{Peers: 5}, &client.Registry{Target: f.name, Conn: reg, DialOptions: opts, Ahead: 5}, out).Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	if reg.lookups != 1 {
		t.Errorf("%d lookups; want 1, the manifest's, whose holders the download then used", reg.lookups)
	}
	if len(rep.Peers) != 5 {
		t.Errorf("%d peers used; want 5", len(rep.Peers))
	}
	if n := dialed.left(); n != 0 {
		t.Errorf("%d peer connections left open after the download", n)
	}
}

// Connections made ahead that no peer slot takes are closed: when fewer
// peers are wanted than were connected, and when the file was already
// complete and no peer is needed at all.
func TestConnectionsMadeAheadAreClosed(t *testing.T) {
	f := newFixture(t, 1<<20)
	c := f.start(t, make([]cluster.PeerSpec, 5), nil)
	out := filepath.Join(t.TempDir(), "out")
	for _, tc := range []struct {
		name  string
		peers int
	}{{"fewer peers wanted", 2}, {"file already complete", 5}} {
		t.Run(tc.name, func(t *testing.T) {
			var dialed openConns
			opts := append(client.DialOptions(), grpc.WithContextDialer(dialed.dial))
			rep, err := client.NewDownload(client.Config{Peers: tc.peers}, &client.Registry{Target: f.name, Conn: registryConn(t, c), DialOptions: opts, Ahead: 5}, out).Run(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, out, f.data)
			if tc.name == "file already complete" && !rep.AlreadyDone {
				t.Fatal("the file was downloaded again")
			}
			if n := dialed.left(); n != 0 {
				t.Errorf("%d peer connections left open after the download", n)
			}
		})
	}
	os.Remove(out)
}
