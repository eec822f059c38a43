package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/swarm"
	"github.com/shoalnet/shoal/server"
)

// getFlags are the flags of `shoal get`.
type getFlags struct {
	conn     connFlags
	registry string
	out      string
	peers    int
	force    bool
	cache    bool
	json     bool
	stall    time.Duration
	wait     time.Duration
	serve    bool
	listen   string
	seedFor  time.Duration
	rate     byteSize
	maxRate  byteSize
	timeout  time.Duration
	linkName string // the name a share link gives the file; empty without one
	parents  bool   // keep the file's folders under -o, as cp --parents
}

func newGetCmd(g *globals) *cobra.Command {
	var f getFlags
	cmd := &cobra.Command{
		Use:   "get NAME_OR_ID_OR_LINK",
		Short: "Download a file from several peers at once",
		Long: `get looks a file up in the registry (by content id or by name), fetches it
from several peers at once through one shared chunk queue, verifies every
chunk, and renames OUT.part to OUT only once the whole file checks out.
Run the same command again after a crash or Ctrl-C to resume.`,
		Example: `  shoal get sh1duwmf72tkrepbwt7okzr64vg53njbypmcpugyrfamvg6omdz3sja --registry 127.0.0.1:7000
  shoal get big.iso --registry 127.0.0.1:7000 -o /tmp/big.iso --peers 8
  SHOAL_REGISTRY=127.0.0.1:7000 shoal get big.iso --json
  shoal get 'shoal:sh1duwmf...?name=big.iso&registry=10.0.0.5:7000'   # a share link (shoal share)`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			link, isLink, err := parseLink(target)
			if err != nil {
				return usageError{err}
			}
			if isLink {
				target, f.linkName = link.id, link.name
			}
			if _, err := chunkstore.ParseTreeID(target); err == nil {
				return usageError{fmt.Errorf("%s is a folder's tree id: fetching whole folders is not built yet; get its files by name or id", chunkstore.Clip(target))}
			}
			reg, err := registryAddr(cmd.Context(), "--registry", firstOf(f.registry, link.registry, os.Getenv("SHOAL_REGISTRY")))
			if err != nil {
				return err
			}
			f.registry = reg
			if f.peers < 1 || f.peers > 64 {
				return usageError{fmt.Errorf("--peers %d: use 1 to 64", f.peers)}
			}
			return runGet(cmd.Context(), g, target, f)
		},
	}
	cmd.Flags().StringVar(&f.registry, "registry", "", "registry to look the file up in, host[:port] (default $SHOAL_REGISTRY, else "+defaultRegistry+")")
	cmd.Flags().StringVarP(&f.out, "output", "o", "", "where to write the file; a folder gets the file's name inside it, and a path ending in / is created as a folder; - (or /dev/stdout) writes the file to stdout, each chunk once it is verified, in order (default: the current folder)")
	cmd.Flags().IntVar(&f.peers, "peers", 5, "how many peers to download from at once")
	cmd.Flags().BoolVar(&f.force, "force", false, "replace an existing output file with different contents")
	cmd.Flags().BoolVar(&f.cache, "page-cache", false, "write through the page cache instead of with O_DIRECT")
	cmd.Flags().BoolVar(&f.json, "json", false, "print a JSON summary on stdout instead of a progress bar")
	cmd.Flags().DurationVar(&f.stall, "stall-timeout", 20*time.Second, "drop a peer that sends nothing for this long")
	cmd.Flags().DurationVar(&f.wait, "no-peer-timeout", 15*time.Second, "give up when no peer has worked for this long")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Second, "longest wait for the registry's reply, or a peer's manifest")
	f.conn.register(cmd, false)
	cmd.Flags().BoolVar(&f.serve, "serve", false, "serve verified chunks to other peers while downloading, and seed afterwards")
	cmd.Flags().StringVar(&f.listen, "listen", "127.0.0.1:0", "with --serve: address to serve on (port 0 picks a free one)")
	cmd.Flags().DurationVar(&f.seedFor, "seed-for", 0, "with --serve: keep seeding this long after finishing (0: until Ctrl-C)")
	cmd.Flags().Var(&f.rate, "rate", "with --serve: upload limit per second, as 5M or 512K; 0 means unlimited")
	cmd.Flags().BoolVar(&f.parents, "parents", false, "keep the file's folders from the network's name under -o (or the current folder), as cp --parents: sub/inner.txt is written as sub/inner.txt")
	cmd.Flags().Var(&f.maxRate, "max-download-rate", "download limit per second over all peers, as 5M or 512K; 0 means unlimited")
	return cmd
}

func runGet(ctx context.Context, g *globals, target string, f getFlags) error {
	if f.out == "-" || f.out == "/dev/stdout" {
		if f.serve || f.json {
			return usageError{errors.New("-o - writes the file to stdout: not with --serve or --json")}
		}
		return getToStdout(ctx, g, target, f)
	}
	if f.out != "" && os.IsPathSeparator(f.out[len(f.out)-1]) {
		if err := os.MkdirAll(f.out, 0o755); err != nil {
			return fmt.Errorf("-o %s: %w", f.out, err)
		}
	}
	cc, err := f.conn.dial(f.registry)
	if err != nil {
		return err
	}
	defer cc.Close()
	dial, err := f.conn.dialOptions()
	if err != nil {
		return err
	}
	// Chunks arrive as short-lived 1 MiB buffers; a soft limit makes the
	// collector reclaim them before the heap balloons to twice its size.
	debug.SetMemoryLimit(64 << 20)
	var (
		m   *chunkstore.Manifest
		rep *client.Report
		out string
	)
	// A name whose file is edited while it downloads names new contents:
	// the download starts over on the new id, keeping the chunks of
	// OUT.part that the new manifest shares with the old.
	for attempt := 0; ; attempt++ {
		reg := &client.Registry{Target: target, Conn: cc, DialOptions: append(dial, client.TuningOptions()...), CallTimeout: f.timeout}
		m, err = reg.Manifest(ctx)
		if err != nil {
			err = downloadError(ctx, "", nil, f.conn.explain(ctx, f.registry, err))
			if f.json {
				if perr := printReport(g, nil, err); perr != nil {
					return perr
				}
			}
			return err
		}
		name := m.Name
		if f.linkName != "" {
			name = f.linkName
		}
		if f.parents {
			if out, err = parentsPath(f.out, name); err != nil {
				return usageError{err}
			}
		} else {
			out = outputPath(f.out, name, m.ID.String())
		}
		if f.out == "" && !safeName(path.Base(name)) && attempt == 0 {
			fmt.Fprintf(g.stderr, "the network names this file %s; writing it as %s (use -o to choose a name)\n", chunkstore.Clip(name), out)
		}
		cfg := client.Config{Peers: f.peers, Force: f.force, PageCache: f.cache, StallTimeout: f.stall, NoPeerTimeout: f.wait, MaxRate: int64(f.maxRate)}
		if f.serve {
			rep, err = serveWhileGetting(ctx, g, f, cfg, reg, out)
		} else {
			d := client.NewDownload(cfg, reg, out)
			stop := showProgress(g, d, f.json, m.Size)
			rep, err = d.Run(ctx)
			stop(err == nil)
		}
		var changed *client.NameChangedError
		if !errors.As(err, &changed) || attempt == 2 {
			break
		}
		fmt.Fprintf(g.stderr, "%s changed on the network; fetching %s\n", changed.Name, changed.New)
	}
	if err != nil {
		err = downloadError(ctx, out, rep, err)
	}
	if f.json {
		if perr := printReport(g, rep, err); perr != nil {
			return perr
		}
	}
	if err != nil {
		return err
	}
	if !f.json && !f.serve { // a serving download said it when it completed
		fmt.Fprintln(g.stdout, summary(out, rep, m.ID.String()))
	}
	return nil
}

// serveWhileGetting downloads as a swarm member: it serves verified chunks,
// announces itself to the registry, and seeds after finishing.
func serveWhileGetting(ctx context.Context, g *globals, f getFlags, cfg client.Config, reg *client.Registry, out string) (*client.Report, error) {
	if f.rate < 0 {
		return nil, usageError{fmt.Errorf("--rate %d: must be 0 (unlimited) or more", f.rate)}
	}
	log, err := g.logger()
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	seedFor := f.seedFor
	if seedFor == 0 {
		fmt.Fprintln(g.stderr, "seeding after the download until Ctrl-C")
	}
	srvOpts, err := f.conn.serverOptions()
	if err != nil {
		return nil, err
	}
	dial, err := f.conn.dialOptions()
	if err != nil {
		return nil, err
	}
	var node *server.Node
	seeding := make(chan struct{})
	stopStatus := make(chan struct{})
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		seedStatus(g, &node, seeding, stopStatus, time.Minute)
	}()
	defer func() { close(stopStatus); <-statusDone }()
	return swarm.Get(ctx, swarm.Config{
		ServerOptions: srvOpts, DialOptions: dial,
		Download: cfg, Discoverer: reg, Out: out, Listener: lis, Registry: f.registry,
		Rate: int64(f.rate), SeedFor: seedFor, Logger: log,
		Node: func(n *server.Node) {
			node = n
			fmt.Fprintf(g.stderr, "serving verified chunks on %s\n", n.Addr())
		},
		Completed: func(rep *client.Report) {
			// The download's summary now, not when seeding ends.
			if !f.json {
				fmt.Fprintln(g.stdout, summary(out, rep, rep.ContentID))
			}
			how := "until Ctrl-C"
			if seedFor > 0 {
				how = "for " + seedFor.String()
			}
			fmt.Fprintf(g.stderr, "seeding %s\n", how)
			close(seeding)
		},
	})
}

// seedStatus says, once seeding began, every interval and at the end, what
// the node uploaded and to how many peers.
func seedStatus(g *globals, node **server.Node, seeding, stop <-chan struct{}, interval time.Duration) {
	select {
	case <-seeding:
	case <-stop:
		return
	}
	say := func(what string) {
		st := (*node).Stats()
		fmt.Fprintf(g.stderr, "%s: %s uploaded to %s\n", what, humanBytes(st.BytesServed.Load()), plural(st.PeersServed(), "peer"))
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			say("seeding")
		case <-stop:
			say("seeded")
			return
		}
	}
}

// downloadError is what a failed download says: on an interrupt, what it
// kept; otherwise err, with its exit code.
func downloadError(ctx context.Context, out string, rep *client.Report, err error) error {
	if ctx.Err() != nil && rep != nil {
		return interrupted(out, rep)
	}
	return getError(err)
}

// interrupted says what an interrupted download kept and how to go on.
// Interrupted while the part file of an earlier run was being checked, it
// counts nothing verified yet, but the file keeps every chunk it had.
func interrupted(out string, rep *client.Report) error {
	part := out + ".part"
	if _, err := os.Stat(part); err != nil {
		return codedError{exitCanceled, errors.New("interrupted")}
	}
	if kept := rep.BytesResumed + rep.BytesFetched; kept > 0 {
		return codedError{exitCanceled, fmt.Errorf("interrupted: %s of %s verified in %s; run the same command to resume",
			humanBytes(kept), humanBytes(rep.Size), part)}
	}
	return codedError{exitCanceled, fmt.Errorf("interrupted: %s is kept; run the same command to resume", part)}
}

// getError gives download failures their exit codes.
func getError(err error) error {
	switch {
	case errors.Is(err, client.ErrNotFound):
		return codedError{exitNotFound, err}
	case errors.Is(err, client.ErrExists):
		return codedError{exitExists, err}
	case errors.Is(err, client.ErrAmbiguous):
		return usageError{err}
	}
	return err
}

// showProgress draws a progress bar on a terminal's stderr; on a pipe, or
// with --json, it stays quiet. The returned function stops it: at 100% when
// the download completed, else where it was. A size of 0 means not known
// yet: the bar takes the download's size once it knows it. The bar counts
// only bytes fetched in this run, so its rate and time left are true for a
// resumed download; its description says what was resumed.
func showProgress(g *globals, d *client.Download, quiet bool, size int64) func(complete bool) {
	f, ok := g.stderr.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return func(bool) {}
	}
	return progressBar(f, d, size)
}

// progressBar draws the bar of showProgress on w.
func progressBar(w io.Writer, d progressSource, size int64) func(complete bool) {
	f := w
	if size <= 0 {
		size = -1 // a spinner until the size is known
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(f),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
	)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			p := d.Progress()
			if want := p.Size - p.Resumed; p.Size > 0 && bar.GetMax64() != want {
				bar.ChangeMax64(want)
			}
			desc := plural(p.ActivePeers, "peer")
			if p.Resumed > 0 {
				desc += ", " + humanBytes(p.Resumed) + " resumed"
			}
			bar.Describe(desc)
			bar.Set64(p.Fetched)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func(complete bool) {
		close(done)
		<-finished
		if complete {
			bar.Finish()
		} else {
			bar.Exit()
		}
		fmt.Fprintln(f)
	}
}

// progressSource is what the bar reads: a download's progress.
type progressSource interface{ Progress() client.Progress }

// plural says n things: "1 peer", "2 peers".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// summary is the line a finished download prints.
func summary(out string, rep *client.Report, id string) string {
	if rep.AlreadyDone {
		return fmt.Sprintf("%s is already complete (%s)", out, id)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", out, humanBytes(rep.Size))
	if rep.BytesResumed > 0 {
		fmt.Fprintf(&b, " (%s resumed from %s.part, %s fetched)", humanBytes(rep.BytesResumed), out, humanBytes(rep.BytesFetched))
	}
	switch n := len(rep.Peers); {
	case rep.BytesFetched == 0:
		fmt.Fprintf(&b, " in %.1fs, nothing to fetch", rep.Seconds)
	default:
		fmt.Fprintf(&b, " in %.1fs (%s) from %s", rep.Seconds, humanRate(rep.BytesFetched, rep.Seconds), plural(n, "peer"))
	}
	fmt.Fprintf(&b, ", verified %s", id)
	return b.String()
}

// humanRate is bytes over seconds in IEC units per second.
func humanRate(bytes int64, seconds float64) string {
	if seconds <= 0 {
		return "instant"
	}
	return humanBytes(int64(float64(bytes)/seconds)) + "/s"
}

// jsonReport is what --json prints: the report, how the download ended,
// and on failure the error, so that scripts need not read stderr.
type jsonReport struct {
	*client.Report
	// Outcome is complete, interrupted or failed.
	Outcome string `json:"outcome"`
	// Error is the message a failure printed on stderr.
	Error string `json:"error,omitempty"`
}

// printReport writes a download's report on stdout as indented JSON; rep
// may be nil when the download failed before it began.
func printReport(g *globals, rep *client.Report, err error) error {
	if rep == nil {
		rep = &client.Report{Peers: []client.PeerReport{}}
	}
	out := jsonReport{Report: rep, Outcome: "complete"}
	switch {
	case errors.Is(err, context.Canceled) || exitCode(err, io.Discard) == exitCanceled:
		out.Outcome, out.Error = "interrupted", err.Error()
	case err != nil:
		out.Outcome, out.Error = "failed", err.Error()
	}
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// outputPath is where a download of the file named name ('/'-separated, as
// the network names it) is written: at out; inside out under the name's
// last element when out is a folder or ends in a separator; in the current
// folder when out is empty. fallback stands in for a name a stranger should
// not choose: no file name at all, a dot-file, a name starting with '-', or
// one with control characters or a backslash.
func outputPath(out, name, fallback string) string {
	base := path.Base(name)
	if !safeName(base) {
		base = fallback
	}
	if out != "" && !os.IsPathSeparator(out[len(out)-1]) {
		if fi, err := os.Stat(out); err != nil || !fi.IsDir() {
			return out
		}
	}
	return filepath.Join(out, base)
}

// safeName reports whether a peer's file name may be used as it is.
func safeName(base string) bool {
	if base == "" || base == "." || base == ".." || base == "/" || len(base) > 255 {
		return false
	}
	if base[0] == '.' || base[0] == '-' {
		return false
	}
	for _, r := range base {
		if r < 0x20 || r == 0x7f || r == '\\' || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// parentsPath is where --parents writes a file the network names name:
// name's folders kept under out (the current folder when empty), created
// as needed. A name that could leave out is refused.
func parentsPath(out, name string) (string, error) {
	if err := chunkstore.ValidPath(name); err != nil {
		return "", fmt.Errorf("--parents: %w", err)
	}
	for elem := range strings.SplitSeq(name, "/") {
		if !safeName(elem) {
			return "", fmt.Errorf("--parents: %s has a part a stranger should not choose (%s)", chunkstore.Clip(name), chunkstore.Clip(elem))
		}
	}
	p := filepath.Join(out, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, nil
}
