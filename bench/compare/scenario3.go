package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// scenario3 distributes one file from a capped seeder to n3 capped
// downloaders that serve what they hold: a shoal swarm (registry in the
// seeder, downloaders with --serve) against aria2c BitTorrent peers with
// opentracker. The time is from starting the downloaders to the last one
// holding the whole file.
func scenario3(ctx context.Context, o *options) ([]row, error) {
	base := filepath.Join(o.dir, "s3")
	seed := filepath.Join(base, "seed")
	if err := mkdirs(base, seed); err != nil {
		return nil, err
	}
	defer os.RemoveAll(base)
	const name = "swarm.bin"
	if err := writeRandom(filepath.Join(seed, name), o.size3); err != nil {
		return nil, err
	}
	bt, err := newBTSwarm(base, seed, name)
	if err != nil {
		return nil, err
	}
	defer bt.close()
	res, err := alternate(fmt.Sprintf("scenario 3 (N=%d)", o.n3), o.pairs,
		func() (result, error) { return shoalSwarm(o, base, seed, name) },
		func() (result, error) { return bt.run(o) })
	if err != nil {
		return nil, err
	}
	sh, ar := res[0], res[1]
	F, u, n := float64(o.size3), float64(o.rate3), float64(o.n3)
	d := max(F/u, n*F/(u+n*u))
	label := fmt.Sprintf("3 swarm N=%d %.0f MiB/s", o.n3, u/(1<<20))
	bound := func(rs []result) string {
		w := make([]float64, len(rs))
		for i, r := range rs {
			w[i] = r.wall.Seconds()
		}
		return fmt.Sprintf("%.2f x the bound D = %.1f s", median(w)/d, d)
	}
	return []row{
		{scenario: label, tool: "shoal get --serve, super-seeding seeder", runs: sh, size: o.size3, note: bound(sh) + "; RSS: largest downloader"},
		{scenario: label, tool: "aria2c BitTorrent + opentracker", runs: ar, size: o.size3, ratio: ratios(sh, ar), note: bound(ar) + "; RSS: largest downloader"},
	}, nil
}

var serveReady = regexp.MustCompile(`folder hashed; ready`)

// shoalSwarm runs one shoal swarm to completion.
func shoalSwarm(o *options, base, seed, name string) (result, error) {
	ports, err := freePorts(1)
	if err != nil {
		return result{}, err
	}
	reg := fmt.Sprintf("127.0.0.1:%d", ports[0])
	sd, err := start("shoal serve", o.shoal, "serve", "--dir", seed, "--listen", reg, "--rate", fmt.Sprint(o.rate3),
		"--super-seed", "--index", filepath.Join(base, "seed.index"))
	if err != nil {
		return result{}, err
	}
	defer sd.stop()
	if _, err := sd.waitLine(serveReady, 2*time.Minute); err != nil {
		return result{}, err
	}
	var (
		outs  []string
		procs []*proc
	)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
		for _, out := range outs {
			os.Remove(out)
			os.Remove(out + ".part")
		}
	}()
	t0 := time.Now()
	for k := range o.n3 {
		out := filepath.Join(base, fmt.Sprintf("shoal-%d.bin", k))
		outs = append(outs, out)
		p, err := start("shoal get --serve", o.shoal, "get", name, "--registry", reg, "-o", out, "--serve",
			"--rate", fmt.Sprint(o.rate3), "--peers", fmt.Sprint(min(o.n3, 16)), "--json")
		if err != nil {
			return result{}, err
		}
		procs = append(procs, p)
	}
	// A download is complete when OUT exists: it is renamed there only
	// once every chunk is verified.
	return finishSwarm(t0, outs, outs, procs, o.size3)
}

// waitFiles waits until every path exists, failing early if one of procs
// exits.
func waitFiles(paths []string, procs []*proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		left := 0
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		for _, p := range procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited early: %s", p.name, p.cmd.ProcessState)
			default:
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("downloads not complete after %s", timeout)
}

// btSwarm is opentracker with one torrent of the seed file.
type btSwarm struct {
	base, seed, name string
	torrent, hook    string
	tracker          *proc
}

func newBTSwarm(base, seed, name string) (*btSwarm, error) {
	b := &btSwarm{base: base, seed: seed, name: name, torrent: filepath.Join(base, name+".torrent"), hook: filepath.Join(base, "done.sh")}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	announce := fmt.Sprintf("http://127.0.0.1:%d/announce", ports[0])
	if out, err := exec.Command("mktorrent", "-a", announce, "-l", "20", "-o", b.torrent, filepath.Join(seed, name)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mktorrent: %w\n%s", err, out)
	}
	out, err := exec.Command("aria2c", "-S", b.torrent).Output()
	if err != nil {
		return nil, fmt.Errorf("aria2c -S: %w", err)
	}
	m := regexp.MustCompile(`Info Hash: ([0-9a-f]{40})`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("aria2c -S printed no info hash")
	}
	// Debian's opentracker serves only whitelisted torrents; it chroots
	// to -d, so the list's path is given inside it.
	if err := os.WriteFile(filepath.Join(base, "whitelist"), append(m[1], '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.hook, []byte("#!/bin/sh\ntouch \"$3.done\"\n"), 0o755); err != nil {
		return nil, err
	}
	port := fmt.Sprint(ports[0])
	if b.tracker, err = start("opentracker", "opentracker", "-i", "127.0.0.1", "-p", port, "-P", port, "-d", base, "-w", "/whitelist"); err != nil {
		return nil, err
	}
	if err := waitTCP("127.0.0.1:"+port, 10*time.Second); err != nil {
		b.tracker.stop()
		return nil, err
	}
	return b, nil
}

func (b *btSwarm) close() { b.tracker.stop() }

// run runs one BitTorrent swarm to completion: DHT, PEX and local peer
// discovery off, so peers come only from the tracker on loopback.
func (b *btSwarm) run(o *options) (result, error) {
	ports, err := freePorts(o.n3 + 1)
	if err != nil {
		return result{}, err
	}
	common := []string{"aria2c", "--enable-dht=false", "--enable-dht6=false", "--enable-peer-exchange=false",
		"--bt-enable-lpd=false", "--seed-ratio=0.0", fmt.Sprintf("--max-overall-upload-limit=%d", o.rate3),
		"--file-allocation=falloc", "--console-log-level=warn", "--summary-interval=0", "--interface=127.0.0.1"}
	// stdbuf: aria2c's status lines would wait in a full stdio buffer.
	sd, err := start("aria2c seeder", append([]string{"stdbuf", "-oL"}, append(common, "-V", "-d", b.seed, fmt.Sprintf("--listen-port=%d", ports[0]), b.torrent)...)...)
	if err != nil {
		return result{}, err
	}
	defer sd.stop()
	if _, err := sd.waitLine(regexp.MustCompile(`SEED\(`), 2*time.Minute); err != nil {
		return result{}, fmt.Errorf("seeder: %w", err)
	}
	var (
		outs  []string
		procs []*proc
	)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	t0 := time.Now()
	for k := range o.n3 {
		dir := filepath.Join(b.base, fmt.Sprintf("bt-%d", k))
		os.RemoveAll(dir)
		if err := mkdirs(dir); err != nil {
			return result{}, err
		}
		defer os.RemoveAll(dir)
		outs = append(outs, filepath.Join(dir, b.name+".done"))
		p, err := start("aria2c leecher", append(common, "-d", dir, fmt.Sprintf("--listen-port=%d", ports[k+1]),
			"--on-bt-download-complete="+b.hook, b.torrent)...)
		if err != nil {
			return result{}, err
		}
		procs = append(procs, p)
	}
	files := make([]string, len(outs))
	for k, out := range outs {
		files[k] = strings.TrimSuffix(out, ".done")
	}
	return finishSwarm(t0, outs, files, procs, o.size3)
}

// finishSwarm waits until every marker exists, takes the time since t0,
// checks every downloaded file's size, and stops the downloaders, keeping
// the largest peak RSS.
func finishSwarm(t0 time.Time, markers, files []string, procs []*proc, size int64) (result, error) {
	if err := waitFiles(markers, procs, 10*time.Minute); err != nil {
		return result{}, err
	}
	r := result{wall: time.Since(t0)}
	for _, f := range files {
		if err := sameSize(f, size); err != nil {
			return result{}, err
		}
	}
	for _, p := range procs {
		p.stop()
		r.maxRSS = max(r.maxRSS, p.maxRSS())
	}
	return r, nil
}
