package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// scenario1 downloads one file from 5 unlimited local sources.
func scenario1(ctx context.Context, o *options) ([]row, error) {
	src, out := filepath.Join(o.dir, "s1-src"), filepath.Join(o.dir, "s1-out")
	if err := mkdirs(src, out); err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	defer os.RemoveAll(out)
	const name = "big.bin"
	logf("scenario 1: writing a %d MiB file", o.size1>>20)
	if err := writeRandom(filepath.Join(src, name), o.size1); err != nil {
		return nil, err
	}

	ng, ports, err := startNginx(filepath.Join(o.dir, "s1-nginx"), src, 5)
	if err != nil {
		return nil, err
	}
	defer ng.stop()
	cl, reg, err := startCluster(o, src, 5, 0)
	if err != nil {
		return nil, err
	}
	defer cl.stop()

	ceiling, err := iperfCeiling(ctx, o.size1)
	if err != nil {
		logf("iperf3: %v (ceiling left out)", err)
	}

	var urls []string
	for _, p := range ports {
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/%s", p, name))
	}
	dst := filepath.Join(out, name)
	res, err := alternate("scenario 1", o.pairs,
		download(ctx, dst, o.size1, o.shoal, "get", name, "--registry", reg, "-o", dst, "--peers", "5", "--json"),
		download(ctx, dst, o.size1, aria2Args(out, name, urls)...),
		download(ctx, dst, o.size1, "curl", "-sS", "--fail", "-o", dst, urls[0]),
		// What checking the download costs a curl user: one SHA-256 of the
		// file with openssl (SHA-NI where the CPU has it; coreutils'
		// sha256sum is several times slower).
		download(ctx, dst, o.size1, "sh", "-c", `curl -sS --fail -o "$1" "$2" && openssl dgst -sha256 "$1" >/dev/null`, "sh", dst, urls[0]))
	if err != nil {
		return nil, err
	}
	sh, ar, cu, cs := res[0], res[1], res[2], res[3]
	size := o.size1
	rows := []row{
		{scenario: "1 local", tool: "shoal get, 5 peers", runs: sh, size: size, note: "fsyncs before rename; verifies every chunk"},
		{scenario: "1 local", tool: "aria2c -x5 -s5 -k1M, 5 nginx", runs: ar, size: size, ratio: ratios(sh, ar), note: "no fsync, no verification"},
		{scenario: "1 local", tool: "curl, 1 nginx", runs: cu, size: size, ratio: ratios(sh, cu), note: "no fsync, no verification"},
		{scenario: "1 local", tool: "curl, then openssl sha256", runs: cs, size: size, ratio: ratios(sh, cs), note: "no fsync; one hash of the whole file"},
	}
	if ceiling > 0 {
		rows = append(rows, row{scenario: "1 local", tool: "iperf3 (loopback ceiling)", runs: []result{{wall: ceiling}}, size: size, note: "memory to memory, one stream"})
	}
	return rows, nil
}

// checkAndDrop checks a download's size, then removes it.
func checkAndDrop(path string, size int64) error {
	if err := sameSize(path, size); err != nil {
		return err
	}
	return dropOutput(path, path+".part")
}

func aria2Args(dir, name string, urls []string) []string {
	return append([]string{"aria2c", "-x5", "-s5", "-k1M",
		"--file-allocation=none", "--allow-overwrite=true", "--auto-file-renaming=false",
		"--console-log-level=warn", "--summary-interval=0", "--download-result=hide",
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
		"-d", dir, "-o", name}, urls...)
}

var clusterReady = regexp.MustCompile(`^registry (\S+) with`)

// startCluster runs `shoal cluster` with n peers serving dir.
func startCluster(o *options, dir string, n int, rate int64) (*proc, string, error) {
	p, err := start("shoal cluster", o.shoal, "cluster", "--dir", dir, "--peers", fmt.Sprint(n),
		"--listen", "127.0.0.1:0", "--rate", fmt.Sprint(rate))
	if err != nil {
		return nil, "", err
	}
	m, err := p.waitLine(clusterReady, 2*time.Minute)
	if err != nil {
		p.stop()
		return nil, "", err
	}
	return p, m[1], nil
}

// startNginx runs nginx with n listeners on loopback serving root.
func startNginx(prefix, root string, n int) (*proc, []int, error) {
	if err := mkdirs(prefix, filepath.Join(prefix, "tmp")); err != nil {
		return nil, nil, err
	}
	ports, err := freePorts(n)
	if err != nil {
		return nil, nil, err
	}
	var servers strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&servers, "  server { listen 127.0.0.1:%d; root %s; }\n", p, root)
	}
	t := filepath.Join(prefix, "tmp")
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path %[2]s; proxy_temp_path %[2]s; fastcgi_temp_path %[2]s;
  uwsgi_temp_path %[2]s; scgi_temp_path %[2]s;
%[3]s}
`, prefix, t, servers.String())
	cf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, nil, err
	}
	p, err := start("nginx", "nginx", "-p", prefix, "-c", cf, "-e", filepath.Join(prefix, "error.log"))
	if err != nil {
		return nil, nil, err
	}
	for _, port := range ports {
		if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second); err != nil {
			p.stop()
			return nil, nil, fmt.Errorf("nginx: %w", err)
		}
	}
	return p, ports, nil
}

// iperfCeiling times one iperf3 transfer of size bytes over loopback.
func iperfCeiling(ctx context.Context, size int64) (time.Duration, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	addr := fmt.Sprint(ports[0])
	srv, err := start("iperf3 -s", "iperf3", "-s", "--forceflush", "-B", "127.0.0.1", "-p", addr)
	if err != nil {
		return 0, err
	}
	defer srv.stop()
	// Not a probe connection: iperf3 would take it for a test.
	if _, err := srv.waitLine(regexp.MustCompile(`Server listening`), 10*time.Second); err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "iperf3", "-c", "127.0.0.1", "-p", addr, "-n", fmt.Sprint(size), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 -c: %w", err)
	}
	var rep struct {
		End struct {
			SumReceived struct {
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return 0, fmt.Errorf("iperf3 -J: %w", err)
	}
	return time.Duration(rep.End.SumReceived.Seconds * float64(time.Second)), nil
}
