// Command compare runs shoal and the tools a user would pick instead side by
// side on loopback and prints one table:
//
//  1. one file from 5 local sources, written to disk: `shoal get` from a
//     5-peer `shoal cluster` against `aria2c -x5 -s5 -k1M` from 5 nginx
//     mirrors and `curl` from one nginx, alone and followed by `openssl
//     dgst -sha256` (what checking the download costs); iperf3 gives the
//     loopback ceiling;
//  2. a file from 5 sources each capped: shoal peers with --rate against
//     aria2c from 5 HTTP listeners, each with one token bucket for all its
//     connections (nginx's limit_rate is per request);
//  3. a swarm: one capped seeder and N capped downloaders that serve what
//     they hold, shoal against aria2c BitTorrent peers with opentracker;
//  4. folders from 5 local sources: 10,000 small files against aria2c -i
//     (5 nginx mirrors) and an rsync daemon; a 1 GiB tree against one
//     1 GiB file; a 100,000-entry tree for peak memory;
//  5. latency: every source behind its own toxiproxy proxy adding a delay
//     each way; (a) 5 capped sources, shoal against aria2c from 5 capped
//     HTTP listeners; (b) one uncapped source, `shoal get --peers 1`
//     against curl from nginx.
//
// Runs alternate (shoal, other, shoal, other, ...) for -pairs rounds; the
// table gives medians and the median of the per-round ratios of shoal's
// time to the other's. Every process is started here and stopped by its
// PID; only 127.0.0.1 is used. bench/compare.sh installs the tools first.
//
//	go run ./bench/compare -scenarios 1,2,3,4,5 -pairs 5
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

type options struct {
	pairs int
	size1 int64 // bytes
	size2 int64
	rate2 int64 // bytes per second per source
	size3 int64
	rate3 int64
	n3    int
	// scenario 4: small files and their size; the large tree's size; the
	// entries of the tree measured for memory.
	files4   int
	small4   int64
	size4    int64
	entries4 int
	// scenario 5: file size, cap of each source in (a), delay each way.
	size5 int64
	rate5 int64
	lat5  time.Duration
	shoal string // built binary
	dir   string // scratch folder
}

func main() {
	var (
		o         options
		scenarios = flag.String("scenarios", "1,2,3,5", "scenarios to run, comma-separated")
		s1        = flag.Int64("size1", 1024, "scenario 1 file size in MiB")
		s2        = flag.Int64("size2", 50, "scenario 2 file size in MiB")
		r2        = flag.Float64("rate2", 2, "scenario 2 cap of each source in MiB/s")
		s3        = flag.Int64("size3", 100, "scenario 3 file size in MiB")
		r3        = flag.Float64("rate3", 5, "scenario 3 upload cap of every peer in MiB/s")
		tmp       = flag.String("tmp", "", "scratch folder (default: a new one under $TMPDIR, removed at the end)")
	)
	s5 := flag.Int64("size5", 512, "scenario 5 file size in MiB")
	r5 := flag.Float64("rate5", 20, "scenario 5a cap of each source in MiB/s")
	flag.DurationVar(&o.lat5, "lat5", 50*time.Millisecond, "scenario 5 delay added each way between the client and every source")
	flag.IntVar(&o.pairs, "pairs", 5, "rounds of shoal-then-other per scenario")
	flag.IntVar(&o.n3, "n3", 8, "scenario 3 downloader count")
	flag.IntVar(&o.files4, "files4", 10_000, "scenario 4a small file count")
	small4 := flag.Int64("small4", 4, "scenario 4a small file size in KiB")
	size4 := flag.Int64("size4", 1024, "scenario 4b tree size in MiB")
	flag.IntVar(&o.entries4, "entries4", 100_000, "scenario 4c tree entry count")
	flag.Parse()
	o.size1, o.size2, o.size3 = *s1<<20, *s2<<20, *s3<<20
	o.rate2, o.rate3 = int64(*r2*(1<<20)), int64(*r3*(1<<20))
	o.small4, o.size4 = *small4<<10, *size4<<20
	o.size5, o.rate5 = *s5<<20, int64(*r5*(1<<20))
	if err := run(&o, *scenarios, *tmp); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(o *options, scenarios, tmp string) error {
	var err error
	if tmp == "" {
		if tmp, err = os.MkdirTemp("", "shoal-compare-"); err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
	}
	// nginx workers may run as another user: let them read the files.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	o.dir = tmp
	o.shoal = filepath.Join(tmp, "shoal")
	logf("building shoal")
	if out, err := exec.Command("go", "build", "-o", o.shoal, "./cmd/shoal").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	ctx := context.Background()
	for _, s := range strings.Split(scenarios, ",") {
		var r []row
		switch strings.TrimSpace(s) {
		case "1":
			r, err = scenario1(ctx, o)
		case "2":
			r, err = scenario2(ctx, o)
		case "3":
			r, err = scenario3(ctx, o)
		case "4":
			r, err = scenario4(ctx, o)
		case "5":
			r, err = scenario5(ctx, o)
		default:
			return fmt.Errorf("unknown scenario %q", s)
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", s, err)
		}
		printTable(r) // each scenario's rows once, when it ends: a long run shows progress
	}
	return nil
}

// row is one tool's line in the table.
type row struct {
	scenario string
	tool     string
	runs     []result
	size     int64
	ratio    string // median of per-round ratios of shoal's time to this tool's
	note     string
}

func printTable(rows []row) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\nscenario\ttool\truns\tmedian s\tmedian MB/s\tmedian CPU s\tmachine CPU s\tpeak RSS MiB\tshoal/tool\tnote")
	for _, r := range rows {
		walls := make([]float64, len(r.runs))
		cpus := make([]float64, len(r.runs))
		machine := make([]float64, len(r.runs))
		var rss int64
		for i, x := range r.runs {
			walls[i], cpus[i], machine[i] = x.wall.Seconds(), x.cpu.Seconds(), x.machine.Seconds()
			rss = max(rss, x.maxRSS)
		}
		w := median(walls)
		rssCol := "-"
		if rss > 0 {
			rssCol = fmt.Sprintf("%.0f", float64(rss)/(1<<20))
		}
		cpuCol := "-"
		if median(cpus) > 0 {
			cpuCol = fmt.Sprintf("%.2f", median(cpus))
		}
		machineCol := "-"
		if median(machine) > 0 {
			machineCol = fmt.Sprintf("%.2f", median(machine))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\n", r.scenario, r.tool, len(r.runs), w, float64(r.size)/w/1e6, cpuCol, machineCol, rssCol, r.ratio, r.note)
	}
	tw.Flush()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// alternate runs each of runs in turn, pairs times over (A B A B ...), and
// returns each one's results.
func alternate(label string, pairs int, runs ...func() (result, error)) ([][]result, error) {
	out := make([][]result, len(runs))
	for round := range pairs {
		logf("%s: round %d of %d", label, round+1, pairs)
		for k, run := range runs {
			r, err := run()
			if err != nil {
				return nil, err
			}
			out[k] = append(out[k], r)
		}
	}
	return out, nil
}

// download times argv, which writes a size-byte file at dst, and removes
// the file.
func download(ctx context.Context, dst string, size int64, argv ...string) func() (result, error) {
	return func() (result, error) {
		r, err := timed(ctx, argv...)
		if err != nil {
			return r, err
		}
		return r, checkAndDrop(dst, size)
	}
}

// ratios is the median of a[i]/b[i].
func ratios(a, b []result) string {
	var rs []float64
	for i := range min(len(a), len(b)) {
		rs = append(rs, a[i].wall.Seconds()/b[i].wall.Seconds())
	}
	return strconv.FormatFloat(median(rs), 'f', 3, 64)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// writeRandom makes a file of random-looking bytes.
func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7919 + i>>8)
	}
	var seed uint64 = 0x9e3779b97f4a7c15
	for left := size; left > 0; left -= int64(len(buf)) {
		for i := 0; i+8 <= len(buf); i += 8 {
			seed ^= seed << 13
			seed ^= seed >> 7
			seed ^= seed << 17
			buf[i], buf[i+1], buf[i+2], buf[i+3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
			buf[i+4], buf[i+5], buf[i+6], buf[i+7] = byte(seed>>32), byte(seed>>40), byte(seed>>48), byte(seed>>56)
		}
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirs makes folders readable by every user (nginx workers).
func mkdirs(paths ...string) error {
	for _, p := range paths {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}
