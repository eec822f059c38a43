//go:build netlab

package netlab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/netlab"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// shoalBinary builds the shoal command for the lab's hosts.
func shoalBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shoal")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/shoal").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// eventually checks every 100 ms until check holds, for at most d.
func eventually(t *testing.T, d time.Duration, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		<-tick.C
	}
}

// holders asks the registry, from host h, how many live peers hold name.
func holders(t *testing.T, h *netlab.Host, bin, registry, name string) int {
	out, err := exec.Command("ip", "netns", "exec", h.NS, bin, "ls", "--json", "--registry", registry, "--timeout", "2s").Output()
	if err != nil {
		return -1
	}
	var files []struct {
		Name    string `json:"name"`
		Holders int    `json:"holders"`
	}
	if json.Unmarshal(out, &files) != nil {
		return -1
	}
	for _, f := range files {
		if f.Name == name {
			return f.Holders
		}
	}
	return 0
}

// swarm is a registry on hosts[0], two peers capped at 8 MB/s each on
// hosts[1] and hosts[2] serving one random file, and a client host,
// hosts[3].
type swarm struct {
	bin, registry string
	data          []byte
	reg, p1, p2   *netlab.Host
	cl            *netlab.Host
}

// startSwarm starts the swarm of a file of size bytes and waits until both
// peers are registered; regArgs go to the registry.
func startSwarm(t *testing.T, lab *netlab.Lab, size int, regArgs ...string) *swarm {
	t.Helper()
	s := &swarm{bin: shoalBinary(t), reg: lab.Hosts[0], p1: lab.Hosts[1], p2: lab.Hosts[2], cl: lab.Hosts[3]}
	s.registry = s.reg.Addr(7000)
	dir := t.TempDir()
	s.data = make([]byte, size)
	rand.Read(s.data)
	if err := os.WriteFile(filepath.Join(dir, "data.bin"), s.data, 0o644); err != nil {
		t.Fatal(err)
	}
	s.reg.Start("registry", append([]string{s.bin, "registry", "--listen", s.registry, "--log-level", "warn"}, regArgs...)...)
	for _, p := range []*netlab.Host{s.p1, s.p2} {
		p.Cap("64mbit") // 8 MB/s each: a download takes seconds
		p.Start("serve "+p.Name, s.bin, "serve", "--dir", dir, "--listen", p.Addr(7070), "--registry", s.registry,
			"--index", filepath.Join(t.TempDir(), "idx"), "--log-level", "warn")
	}
	eventually(t, 30*time.Second, "both peers registered", func() bool { return holders(t, s.cl, s.bin, s.registry, "data.bin") == 2 })
	return s
}

// get starts a download on the client host and returns once a chunk is
// written (the part file is sparse until then): requests are under way.
func (s *swarm) get(t *testing.T, args ...string) (*netlab.Proc, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "data.bin")
	get := s.cl.Start("get", append([]string{s.bin, "get", "data.bin", "--registry", s.registry, "-o", out}, args...)...)
	eventually(t, 20*time.Second, "a chunk written", func() bool {
		var st syscall.Stat_t
		return syscall.Stat(out+".part", &st) == nil && st.Blocks*512 >= 1<<20
	})
	return get, out
}

// finished waits for the download and checks its file.
func (s *swarm) finished(t *testing.T, get *netlab.Proc, out, after string) {
	t.Helper()
	err, ended := get.Wait(90 * time.Second)
	if !ended || err != nil {
		t.Fatalf("get after %s: ended %v, %v\n%s", after, ended, err, get.Output())
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, s.data) {
		t.Fatalf("the file differs: %v", err)
	}
}

// Across four hosts (a registry, two capped peers, a client), a download
// goes on while one peer host's link is cut: it completes from the other,
// byte-identical; and the cut host's registration expires within its
// lease. (netlab checks that nothing it made outlives the test.)
func TestDownloadAcrossHostsSurvivesALostHost(t *testing.T) {
	s := startSwarm(t, netlab.New(t, 4), 48<<20, "--lease", "3s")
	get, out := s.get(t, "--stall-timeout", "3s", "--json")
	s.p1.Cut() // mid-download, with requests at both peers under way
	start := time.Now()
	s.finished(t, get, out, "a peer host was lost")
	var rep struct {
		Outcome string `json:"outcome"`
		Peers   []struct {
			Addr    string `json:"addr"`
			Bytes   int64  `json:"bytes"`
			Dropped string `json:"dropped"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(get.Output()), &rep); err != nil || rep.Outcome != "complete" {
		t.Fatalf("report: %v\n%s", err, get.Output())
	}
	t.Logf("completed %v after the cut: %+v", time.Since(start).Round(time.Millisecond), rep.Peers)
	// The lost host's lease (3 s) ends: it is gone from the registry.
	eventually(t, 10*time.Second, "the cut host expired from the registry", func() bool { return holders(t, s.cl, s.bin, s.registry, "data.bin") == 1 })
}

// Two federated registries, each with a peer announcing to it, split by a
// partition for 30 s (the client, in neither half, still reaches both):
// within a lease each side forgets the peer it learned from the other (no
// entry outlives its lease), and once healed both agree within 10 s.
func TestRegistryPartitionHeals(t *testing.T) {
	bin := shoalBinary(t)
	lab := netlab.New(t, 5)
	r1, r2, p1, p2, cl := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2], lab.Hosts[3], lab.Hosts[4]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.bin"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	const lease = 3 * time.Second
	r1.Start("registry 1", bin, "registry", "--listen", r1.Addr(7000), "--lease", lease.String(), "--log-level", "warn")
	r2.Start("registry 2", bin, "registry", "--listen", r2.Addr(7000), "--lease", lease.String(), "--join", r1.Addr(7000), "--log-level", "warn")
	p1.Start("peer 1", bin, "serve", "--dir", dir, "--listen", p1.Addr(7070), "--registry", r1.Addr(7000), "--index", filepath.Join(t.TempDir(), "idx"), "--log-level", "warn")
	p2.Start("peer 2", bin, "serve", "--dir", dir, "--listen", p2.Addr(7070), "--registry", r2.Addr(7000), "--index", filepath.Join(t.TempDir(), "idx"), "--log-level", "warn")
	agree := func(n int) func() bool {
		return func() bool {
			return holders(t, cl, bin, r1.Addr(7000), "f.bin") == n && holders(t, cl, bin, r2.Addr(7000), "f.bin") == n
		}
	}
	eventually(t, 30*time.Second, "both registries list both peers", agree(2))

	lab.Partition([]*netlab.Host{r1, p1}, []*netlab.Host{r2, p2})
	cut := time.Now()
	// Within a lease (and a check's slack) each side forgets the peer it
	// learned from the other.
	eventually(t, lease+3*time.Second, "each side forgets the other's peer", agree(1))
	t.Logf("both sides forgot the other's peer %v after the partition began", time.Since(cut).Round(100*time.Millisecond))
	for time.Since(cut) < 30*time.Second { // the partition lasts 30 s, checked every second
		if !agree(1)() {
			t.Fatalf("during the partition a registry lists %d and %d holders, want 1 each", holders(t, cl, bin, r1.Addr(7000), "f.bin"), holders(t, cl, bin, r2.Addr(7000), "f.bin"))
		}
		timer := time.NewTimer(time.Second)
		<-timer.C
	}
	lab.Heal()
	healed := time.Now()
	eventually(t, 10*time.Second, "both registries agree again", agree(2))
	t.Logf("agreed %v after the partition healed", time.Since(healed).Round(100*time.Millisecond))
}

// Five registries, each joined through the one before, and ten capped peers
// on fifteen hosts: every registry learns of all the others and lists all
// ten peers; a peer host's link cut mid-download expires everywhere within
// one lease, and the download completes from the others, byte-identical.
func TestFederationOfFifteenHosts(t *testing.T) {
	bin := shoalBinary(t)
	lab := netlab.New(t, 16)
	regs, peers, cl := lab.Hosts[:5], lab.Hosts[5:15], lab.Hosts[15]
	const lease = 4 * time.Second
	for i, r := range regs {
		args := []string{bin, "registry", "--listen", r.Addr(7000), "--lease", lease.String(), "--log-level", "warn"}
		if i > 0 {
			args = append(args, "--join", regs[i-1].Addr(7000))
		}
		r.Start("registry "+r.Name, args...)
	}
	data := make([]byte, 48<<20)
	rand.Read(data)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for i, p := range peers {
		p.Cap("8mbit") // 1 MB/s each: the download takes seconds
		p.Start("serve "+p.Name, bin, "serve", "--dir", dir, "--listen", p.Addr(7070), "--registry", regs[i%len(regs)].Addr(7000),
			"--index", filepath.Join(t.TempDir(), "idx"), "--log-level", "warn")
	}
	all := func(n int) func() bool {
		return func() bool {
			for _, r := range regs {
				if holders(t, cl, bin, r.Addr(7000), "data.bin") != n {
					return false
				}
			}
			return true
		}
	}
	start := time.Now()
	counts := func() []int {
		var n []int
		for _, r := range regs {
			n = append(n, holders(t, cl, bin, r.Addr(7000), "data.bin"))
		}
		return n
	}
	eventually(t, 30*time.Second, "every registry lists all ten peers", func() bool {
		if all(10)() {
			return true
		}
		t.Logf("holders at the five registries: %v", counts())
		return false
	})
	t.Logf("five registries listed all ten peers %v after start", time.Since(start).Round(100*time.Millisecond))
	ms := members(t, cl, regs[4].Addr(7000))
	if len(ms) != 5 {
		t.Fatalf("the last registry, joined through the fourth, knows %d members: %v", len(ms), ms)
	}

	out := filepath.Join(t.TempDir(), "data.bin")
	get := cl.Start("get", bin, "get", "data.bin", "--registry", regs[2].Addr(7000), "--peers", "10", "--stall-timeout", "3s", "-o", out)
	eventually(t, 20*time.Second, "a chunk written", func() bool {
		var st syscall.Stat_t
		return syscall.Stat(out+".part", &st) == nil && st.Blocks*512 >= 1<<20
	})
	peers[0].Cut()
	cut := time.Now()
	eventually(t, lease+3*time.Second, "every registry forgets the cut host", all(9))
	t.Logf("the cut host left every registry %v after the cut (lease %v)", time.Since(cut).Round(100*time.Millisecond), lease)
	if err, ended := get.Wait(90 * time.Second); !ended || err != nil {
		t.Fatalf("get after a peer host was cut: ended %v, %v\n%s", ended, err, get.Output())
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file differs: %v", err)
	}
}

// members asks a registry, from host h, which members it knows alive.
func members(t *testing.T, h *netlab.Host, registry string) []string {
	t.Helper()
	cc, err := grpc.NewClient(registry, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(h.Dial))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := shoalv1.NewRegistryServiceClient(cc).Members(ctx, &shoalv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members of %s: %v", registry, err)
	}
	var alive []string
	for _, m := range resp.GetMembers() {
		alive = append(alive, m.GetAddress())
	}
	return alive
}

// The registry host lost mid-download: the download goes on from the
// peers it already found, and completes.
func TestDownloadSurvivesALostRegistry(t *testing.T) {
	s := startSwarm(t, netlab.New(t, 4), 32<<20)
	get, out := s.get(t, "--json")
	s.reg.Cut()
	s.finished(t, get, out, "the registry host was lost")
}
