// Package netlab builds a lab of hosts on one machine, for tests and
// benchmarks of shoal across a network: each host is a network namespace
// with its own address on a subnet (10.77.0.0/24) that exists only inside
// the lab, joined by a veth pair to a bridge in a namespace of its own.
// Hosts run real processes; a host's upload can be capped (tc tbf) and its
// link cut and restored. Everything the lab makes is removed when the test
// ends, also on failure. It needs root and iproute2: without them New
// fails the test with one message saying so.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TB is what the lab needs of its caller: a test, a benchmark, or a
// program's stand-in (see Main).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

var _ TB = testing.TB(nil)

// Lab is a set of hosts on one bridge.
type Lab struct {
	t      TB
	prefix string // namespace and link name prefix, unique per lab
	bridge string // the bridge's namespace
	Hosts  []*Host

	mu         sync.Mutex
	procs      []*Proc    // started processes; guarded by mu
	blackholes [][2]*Host // routes Partition added: on [0], to [1]; guarded by mu
}

// Host is one namespace of the lab.
type Host struct {
	lab  *Lab
	Name string     // h1, h2, ...
	NS   string     // its namespace
	IP   netip.Addr // its address in the lab

	nsOnce sync.Once
	nsFD   int // its namespace, opened for Dial; -1 if that failed
}

// New makes a lab of n hosts (at most 200), removed when t ends.
func New(t TB, n int) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netlab needs root (network namespaces, veth, tc): run the lab tests as root, as .ci/run does")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("netlab needs iproute2's ip (apt-get install iproute2)")
	}
	var b [3]byte
	rand.Read(b[:])
	l := &Lab{t: t, prefix: "sl" + hex.EncodeToString(b[:])}
	l.bridge = l.prefix + "-br"
	t.Cleanup(l.close)
	l.ip("netns", "add", l.bridge)
	l.ip("-n", l.bridge, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.bridge, "link", "set", "br0", "up")
	for i := range n {
		h := &Host{lab: l, Name: fmt.Sprintf("h%d", i+1), IP: netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)})}
		h.NS = l.prefix + "-" + h.Name
		host, peer := l.prefix+"e"+fmt.Sprint(i), l.prefix+"b"+fmt.Sprint(i) // under 15 bytes
		l.ip("netns", "add", h.NS)
		l.ip("link", "add", host, "type", "veth", "peer", "name", peer)
		l.ip("link", "set", host, "netns", h.NS)
		l.ip("link", "set", peer, "netns", l.bridge)
		l.ip("-n", h.NS, "link", "set", host, "name", "eth0")
		l.ip("-n", h.NS, "addr", "add", h.IP.String()+"/24", "dev", "eth0")
		l.ip("-n", h.NS, "link", "set", "eth0", "up")
		l.ip("-n", h.NS, "link", "set", "lo", "up")
		l.ip("-n", l.bridge, "link", "set", peer, "master", "br0")
		l.ip("-n", l.bridge, "link", "set", peer, "up")
		l.Hosts = append(l.Hosts, h)
	}
	return l
}

// ip runs one ip command, failing the test if it fails.
func (l *Lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// close stops every process and removes every namespace (and with them
// their links and qdiscs), and fails the test if any is left.
func (l *Lab) close() {
	l.mu.Lock()
	procs := l.procs
	l.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
	for _, h := range l.Hosts {
		if h.nsFD > 0 {
			unix.Close(h.nsFD)
		}
		exec.Command("ip", "netns", "del", h.NS).Run()
	}
	exec.Command("ip", "netns", "del", l.bridge).Run()
	if left := l.Namespaces(); len(left) > 0 {
		l.t.Errorf("netlab: namespaces left behind: %v", left)
	}
}

// Namespaces lists the lab's namespaces that exist now.
func (l *Lab) Namespaces() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var ns []string
	for line := range strings.Lines(string(out)) {
		if name, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(name, l.prefix) {
			ns = append(ns, name)
		}
	}
	return ns
}

// Addr is host:port on h.
func (h *Host) Addr(port int) string { return fmt.Sprintf("%s:%d", h.IP, port) }

// Cap limits h's upload to rate (tc syntax: "40mbit").
func (h *Host) Cap(rate string) {
	h.lab.t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", h.NS, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "64kb", "latency", "200ms").CombinedOutput(); err != nil {
		h.lab.t.Fatalf("tc on %s: %v: %s", h.Name, err, out)
	}
}

// Cut takes h's link down, as a lost host: its packets are dropped, no
// connection is reset.
func (h *Host) Cut() { h.lab.ip("-n", h.NS, "link", "set", "eth0", "down") }

// Restore brings h's link back.
func (h *Host) Restore() { h.lab.ip("-n", h.NS, "link", "set", "eth0", "up") }

// Proc is a process running on a host.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // set before done closes
}

// Start runs a command on h; it is killed when the test ends.
func (h *Host) Start(name string, args ...string) *Proc {
	h.lab.t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		h.lab.t.Fatalf("start %s on %s: %v", name, h.Name, err)
	}
	p := &Proc{Name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	return p
}

// Output is what the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Wait waits for the process to end, at most d; false means it did not.
func (p *Proc) Wait(d time.Duration) (error, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err, true
	case <-t.C:
		return nil, false
	}
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Partition splits the lab: hosts in different groups cannot reach each
// other, hosts in no group reach every host. Each host of a group gets a
// blackhole route to every host of the other groups (this kernel has no tc
// drop action), so links stay up and established connections see their
// packets vanish; a new connection across fails at once. Heal ends it.
func (l *Lab) Partition(groups ...[]*Host) {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for gi, g := range groups {
		for _, h := range g {
			var b strings.Builder
			for gj, other := range groups {
				for _, x := range other {
					if gj != gi {
						fmt.Fprintf(&b, "route add blackhole %s/32\n", x.IP)
						l.blackholes = append(l.blackholes, [2]*Host{h, x})
					}
				}
			}
			l.batch(h, b.String())
		}
	}
}

// Heal removes every partition.
func (l *Lab) Heal() {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[*Host]*strings.Builder{}
	for _, bh := range l.blackholes {
		if by[bh[0]] == nil {
			by[bh[0]] = &strings.Builder{}
		}
		fmt.Fprintf(by[bh[0]], "route del blackhole %s/32\n", bh[1].IP)
	}
	l.blackholes = nil
	for h, b := range by {
		l.batch(h, b.String())
	}
}

// batch runs ip commands in h's namespace.
func (l *Lab) batch(h *Host, cmds string) {
	l.t.Helper()
	cmd := exec.Command("ip", "-n", h.NS, "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("ip -n %s -batch: %v: %s", h.NS, err, out)
	}
}

// Dial opens a TCP connection from h's namespace, from this process: the
// socket is made on a thread switched into the namespace for the call, and
// stays there. It lets a test or bench program act as a client on a host
// without a process of its own (grpc.WithContextDialer).
func (h *Host) Dial(ctx context.Context, addr string) (net.Conn, error) {
	h.nsOnce.Do(func() {
		fd, err := unix.Open("/run/netns/"+h.NS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		h.nsFD = fd
	})
	if h.nsFD < 0 {
		return nil, fmt.Errorf("netlab: namespace %s cannot be opened", h.NS)
	}
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer unix.Close(self)
	if err := unix.Setns(h.nsFD, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("netlab: setns %s: %w", h.NS, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if unix.Setns(self, unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	} // else the thread stays locked and dies with this goroutine's end
	return c, err
}

// Main is the lab's TB for a program (a bench): Errorf prints and marks a
// failure, Fatal and Fatalf also run the cleanups and exit with status 1.
// The program defers Close.
type Main struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

func (m *Main) Helper() {}

func (m *Main) Fatal(args ...any) { m.Fatalf("%s", fmt.Sprint(args...)) }

func (m *Main) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	m.Close()
	os.Exit(1)
}

func (m *Main) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	m.mu.Lock()
	m.failed = true
	m.mu.Unlock()
}

func (m *Main) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

// Failed reports whether Errorf was called.
func (m *Main) Failed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

// Close runs the cleanups, last first, once.
func (m *Main) Close() {
	m.mu.Lock()
	fs := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// Pid is the process's id (ip netns exec runs the command in its place).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Interrupt sends the process SIGINT, as Ctrl-C would.
func (p *Proc) Interrupt() { p.cmd.Process.Signal(os.Interrupt) }
