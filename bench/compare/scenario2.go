package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/time/rate"
)

// scenario2 downloads a file from 5 sources, each capped.
func scenario2(ctx context.Context, o *options) ([]row, error) {
	src, out := filepath.Join(o.dir, "s2-src"), filepath.Join(o.dir, "s2-out")
	if err := mkdirs(src, out); err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	defer os.RemoveAll(out)
	const name = "capped.bin"
	if err := writeRandom(filepath.Join(src, name), o.size2); err != nil {
		return nil, err
	}
	var urls []string
	for range 5 {
		u, stop, err := cappedHTTP(filepath.Join(src, name), o.rate2)
		if err != nil {
			return nil, err
		}
		defer stop()
		urls = append(urls, u)
	}
	cl, reg, err := startCluster(o, src, 5, o.rate2)
	if err != nil {
		return nil, err
	}
	defer cl.stop()

	dst := filepath.Join(out, name)
	res, err := alternate("scenario 2", o.pairs,
		download(ctx, dst, o.size2, o.shoal, "get", name, "--registry", reg, "-o", dst, "--peers", "5", "--json"),
		download(ctx, dst, o.size2, aria2Args(out, name, urls)...))
	if err != nil {
		return nil, err
	}
	sh, ar := res[0], res[1]
	ideal := time.Duration(float64(o.size2) / float64(5*o.rate2) * float64(time.Second))
	caps := func(rs []result) string {
		w := make([]float64, len(rs))
		for i, r := range rs {
			w[i] = r.wall.Seconds()
		}
		return fmt.Sprintf("%.1f%% of the caps' sum (ideal %.1f s)", 100*ideal.Seconds()/median(w), ideal.Seconds())
	}
	label := fmt.Sprintf("2 capped %.0fx%.0f MiB/s", 5.0, float64(o.rate2)/(1<<20))
	return []row{
		{scenario: label, tool: "shoal get, 5 peers --rate", runs: sh, size: o.size2, note: caps(sh)},
		{scenario: label, tool: "aria2c -x5 -s5 -k1M, 5 capped HTTP", runs: ar, size: o.size2, ratio: ratios(sh, ar), note: caps(ar)},
	}, nil
}

// cappedHTTP serves one file on a loopback port whose upload, all
// connections together, is held to bytesPerSec by one token bucket: a true
// per-source cap, which nginx's per-request limit_rate is not. It returns
// the file's URL and a function that stops the server.
func cappedHTTP(path string, bytesPerSec int64) (string, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	const burst = 32 << 10
	lim := rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		http.ServeContent(&cappedWriter{ResponseWriter: w, lim: lim, ctx: r.Context()}, r, fi.Name(), fi.ModTime(), f)
	})}
	go srv.Serve(lis)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logf("capped http: %v", err)
		}
		srv.Close()
	}
	return fmt.Sprintf("http://%s/%s", lis.Addr(), filepath.Base(path)), stop, nil
}

// cappedWriter takes tokens for every byte before writing it.
type cappedWriter struct {
	http.ResponseWriter
	lim *rate.Limiter
	ctx context.Context
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), w.lim.Burst())
		if err := w.lim.WaitN(w.ctx, k); err != nil {
			return n, err
		}
		m, err := w.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

var _ io.Writer = (*cappedWriter)(nil)
