package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"
)

// scenario5 puts a round trip between the client and every source: each
// source behind its own toxiproxy proxy that delays each direction by
// o.lat5. (a) 5 sources each capped, shoal against aria2c from 5 capped
// HTTP listeners; (b) one uncapped source, `shoal get --peers 1` against
// curl from nginx. The registry is reached directly: only the data path
// is delayed.
func scenario5(ctx context.Context, o *options) ([]row, error) {
	src, out := filepath.Join(o.dir, "s5-src"), filepath.Join(o.dir, "s5-out")
	if err := mkdirs(src, out); err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	defer os.RemoveAll(out)
	const name = "far.bin"
	logf("scenario 5: writing a %d MiB file", o.size5>>20)
	if err := writeRandom(filepath.Join(src, name), o.size5); err != nil {
		return nil, err
	}
	tp, err := startToxiproxy(o)
	if err != nil {
		return nil, err
	}
	defer tp.p.stop()
	ms := o.lat5.Milliseconds()

	// (a) 5 capped sources.
	regA, stopA, err := startRegistry(o)
	if err != nil {
		return nil, err
	}
	defer stopA()
	var urls []string
	for i := range 5 {
		stop, err := startServe(o, src, regA, o.rate5, tp, fmt.Sprintf("shoal-%d", i), ms)
		if err != nil {
			return nil, err
		}
		defer stop()
		u, stopHTTP, err := cappedHTTP(filepath.Join(src, name), o.rate5)
		if err != nil {
			return nil, err
		}
		defer stopHTTP()
		pu, err := tp.proxyURL(fmt.Sprintf("http-%d", i), u, ms)
		if err != nil {
			return nil, err
		}
		urls = append(urls, pu)
	}
	if err := waitHolders(o, regA, name, 5); err != nil {
		return nil, err
	}
	// (b) one uncapped source.
	regB, stopB, err := startRegistry(o)
	if err != nil {
		return nil, err
	}
	defer stopB()
	stopOne, err := startServe(o, src, regB, 0, tp, "shoal-one", ms)
	if err != nil {
		return nil, err
	}
	defer stopOne()
	if err := waitHolders(o, regB, name, 1); err != nil {
		return nil, err
	}
	ng, ports, err := startNginx(filepath.Join(o.dir, "s5-nginx"), src, 1)
	if err != nil {
		return nil, err
	}
	defer ng.stop()
	curlURL, err := tp.proxyURL("nginx", fmt.Sprintf("http://127.0.0.1:%d/%s", ports[0], name), ms)
	if err != nil {
		return nil, err
	}

	dst := filepath.Join(out, name)
	res, err := alternate("scenario 5", o.pairs,
		download(ctx, dst, o.size5, o.shoal, "get", name, "--registry", regA, "-o", dst, "--peers", "5", "--json"),
		download(ctx, dst, o.size5, aria2Args(out, name, urls)...),
		download(ctx, dst, o.size5, o.shoal, "get", name, "--registry", regB, "-o", dst, "--peers", "1", "--json"),
		download(ctx, dst, o.size5, "curl", "-sS", "--fail", "-o", dst, curlURL))
	if err != nil {
		return nil, err
	}
	sa, ar, sb, cu := res[0], res[1], res[2], res[3]
	ideal := float64(o.size5) / float64(5*o.rate5)
	caps := func(rs []result) string {
		return fmt.Sprintf("%.1f%% of the caps' sum (ideal %.2f s)", 100*ideal/medianWall(rs), ideal)
	}
	la := fmt.Sprintf("5a %d ms each way, 5x%.0f MiB/s", ms, float64(o.rate5)/(1<<20))
	lb := fmt.Sprintf("5b %d ms each way, 1 source", ms)
	return []row{
		{scenario: la, tool: "shoal get, 5 peers --rate", runs: sa, size: o.size5, note: caps(sa)},
		{scenario: la, tool: "aria2c -x5 -s5 -k1M, 5 capped HTTP", runs: ar, size: o.size5, ratio: ratios(sa, ar), note: caps(ar)},
		{scenario: lb, tool: "shoal get --peers 1", runs: sb, size: o.size5, note: fmt.Sprintf("%.2f of curl's throughput", medianWall(cu)/medianWall(sb))},
		{scenario: lb, tool: "curl, 1 nginx", runs: cu, size: o.size5, ratio: ratios(sb, cu), note: "no fsync, no verification"},
	}, nil
}

// medianWall is the median wall time of rs in seconds.
func medianWall(rs []result) float64 {
	w := make([]float64, len(rs))
	for i, r := range rs {
		w[i] = r.wall.Seconds()
	}
	return median(w)
}

// toxiproxy is a running toxiproxy server and its API address.
type toxiproxy struct {
	p   *proc
	api string
}

// startToxiproxy builds toxiproxy from tools/go.mod and starts it on a
// free loopback port.
func startToxiproxy(o *options) (*toxiproxy, error) {
	bin := filepath.Join(o.dir, "toxiproxy")
	if _, err := os.Stat(bin); err != nil {
		logf("building toxiproxy")
		cmd := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", bin, "github.com/Shopify/toxiproxy/v2/cmd/server")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build toxiproxy: %w\n%s", err, out)
		}
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	p, err := start("toxiproxy", bin, "-host", "127.0.0.1", "-port", fmt.Sprint(ports[0]))
	if err != nil {
		return nil, err
	}
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := waitTCP(api, 10*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("toxiproxy: %w", err)
	}
	return &toxiproxy{p: p, api: "http://" + api}, nil
}

// proxy makes a proxy named name on a free loopback port in front of
// upstream (host:port), delaying each direction by ms, and returns its
// address.
func (t *toxiproxy) proxy(name, upstream string, ms int64) (string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := t.post("/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true}); err != nil {
		return "", err
	}
	for _, stream := range []string{"upstream", "downstream"} {
		toxic := map[string]any{"name": "latency_" + stream, "type": "latency", "stream": stream, "toxicity": 1.0,
			"attributes": map[string]any{"latency": ms, "jitter": 0}}
		if err := t.post("/proxies/"+name+"/toxics", toxic); err != nil {
			return "", err
		}
	}
	return listen, nil
}

// proxyURL puts a proxy in front of the host of an http://host/path URL
// and returns the URL through it.
func (t *toxiproxy) proxyURL(name, u string, ms int64) (string, error) {
	m := regexp.MustCompile(`^http://([^/]+)(/.*)$`).FindStringSubmatch(u)
	if m == nil {
		return "", fmt.Errorf("proxy %s: unexpected URL %q", name, u)
	}
	addr, err := t.proxy(name, m[1], ms)
	if err != nil {
		return "", err
	}
	return "http://" + addr + m[2], nil
}

func (t *toxiproxy) post(path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(t.api+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("toxiproxy %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var msg bytes.Buffer
		msg.ReadFrom(resp.Body)
		return fmt.Errorf("toxiproxy %s: %s: %s", path, resp.Status, msg.String())
	}
	return nil
}

// startRegistry runs `shoal registry` on a free loopback port.
func startRegistry(o *options) (string, func(), error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	p, err := start("shoal registry", o.shoal, "registry", "--listen", addr)
	if err != nil {
		return "", nil, err
	}
	if err := waitTCP(addr, 10*time.Second); err != nil {
		p.stop()
		return "", nil, err
	}
	return addr, p.stop, nil
}

// startServe runs `shoal serve` of dir on a free port, capped at rate (0:
// no cap), behind a delaying proxy named name that it advertises.
func startServe(o *options, dir, registry string, rate int64, tp *toxiproxy, name string, ms int64) (func(), error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	front, err := tp.proxy(name, listen, ms)
	if err != nil {
		return nil, err
	}
	p, err := start("shoal serve "+name, o.shoal, "serve", "--dir", dir, "--listen", listen, "--advertise", front,
		"--registry", registry, "--rate", fmt.Sprint(rate), "--index", filepath.Join(o.dir, name+".index"))
	if err != nil {
		return nil, err
	}
	if _, err := p.waitLine(serveReady, 2*time.Minute); err != nil {
		p.stop()
		return nil, err
	}
	return p.stop, nil
}

// waitHolders waits until the registry lists n holders of the file name.
func waitHolders(o *options, registry, name string, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		out, err := exec.Command(o.shoal, "ls", "--registry", registry, "--json").Output()
		if err == nil {
			var files []struct {
				Name    string `json:"name"`
				Holders int    `json:"holders"`
			}
			if json.Unmarshal(out, &files) == nil {
				for _, f := range files {
					if f.Name == name && f.Holders >= n {
						return nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry %s: %s not held by %d peers within 30 s", registry, name, n)
		}
		<-tick.C
	}
}
