package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/course"
)

func newCourseCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "course",
		Short: "Speak the course's raw TCP/UDP P2P protocol (client and server)",
	}
	cmd.AddCommand(newCourseGetCmd(g), newCourseServeCmd(g))
	return cmd
}

// The course package satisfies the client's interfaces by method set; a
// drifted method must fail the build, not quietly schedule a whole-file
// stream as a plain source.
var (
	_ client.Source           = (*course.Peer)(nil)
	_ client.SequentialSource = (*course.Stream)(nil)
	_ client.Discoverer       = courseDiscoverer{}
	_ client.Forecaster       = courseDiscoverer{}
)

// courseDiscoverer adapts a course tracker to the client's Discoverer.
type courseDiscoverer struct {
	t      *course.Tracker
	stream bool                              // one connection carries a whole-file stream
	wrap   func(client.Source) client.Source // tests observe connections; nil in use
}

func (c courseDiscoverer) Manifest(ctx context.Context) (*chunkstore.Manifest, error) {
	return c.t.Manifest(ctx)
}

func (c courseDiscoverer) Forecast(exclude []string) (float64, bool) {
	return c.t.Forecast(exclude)
}

func (c courseDiscoverer) Discover(ctx context.Context, exclude []string, limit int) ([]client.Source, error) {
	var out []client.Source
	add := func(s client.Source) {
		if c.wrap != nil {
			s = c.wrap(s)
		}
		out = append(out, s)
	}
	if c.stream && limit > 0 {
		if st, ok := c.t.Stream(); ok {
			limit--
			add(st)
		}
	}
	for _, p := range c.t.Peers(exclude, limit) {
		add(p)
	}
	return out, nil
}

// resolveHostPort accepts host:port with a host name or an IP.
func resolveHostPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, usageError{fmt.Errorf("%q is not host:port: %w", s, err)}
	}
	return a.AddrPort(), nil
}

func newCourseGetCmd(g *globals) *cobra.Command {
	var (
		tracker, srv, out, grader, iam string
		conns                          int
		timeout                        time.Duration
		asJSON, stream                 bool
	)
	cmd := &cobra.Command{
		Use:   "get [FILE]",
		Short: "Download a file from a course swarm (or one server, or the grading flow)",
		Example: `  shoal course get redsox.jpg --tracker 127.0.0.1:19876
  shoal course get redsox.jpg --server 127.0.0.1:18765
  shoal course get --iam 1234 --grader 127.0.0.1:20001 --tracker 127.0.0.1:19876`,
		Args: func(cmd *cobra.Command, args []string) error {
			if iam == "" && len(args) != 1 || iam != "" && len(args) > 0 {
				return usageError{errors.New("give FILE, or --iam and --grader without FILE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if conns < 1 || conns > 5 {
				return usageError{fmt.Errorf("--conns %d: use 1 to 5 (the server allows 5 per IP)", conns)}
			}
			ctx := cmd.Context()
			if srv != "" {
				addr, err := resolveHostPort(srv)
				if err != nil {
					return err
				}
				out = outputPath(out, args[0], args[0])
				return courseWhole(ctx, g, addr, args[0], out, timeout)
			}
			if tracker == "" {
				return usageError{errors.New("--tracker (or --server) is required")}
			}
			taddr, err := resolveHostPort(tracker)
			if err != nil {
				return err
			}
			if iam != "" {
				return courseGrade(ctx, g, taddr, grader, iam, swarmOptions{conns: conns, timeout: timeout, noStream: !stream})
			}
			out = outputPath(out, args[0], args[0])
			show := func(d *client.Download) func(bool) { return showProgress(g, d, asJSON, 0) }
			rep, err := courseSwarm(ctx, taddr, args[0], out, swarmOptions{conns: conns, timeout: timeout, noStream: !stream, show: show})
			if err != nil {
				err = downloadError(ctx, out, rep, err)
			}
			if asJSON {
				if perr := printReport(g, rep, err); perr != nil {
					return perr
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return nil
			}
			ports := map[string]bool{}
			for _, p := range rep.Peers {
				if _, err := netip.ParseAddrPort(p.Addr); err == nil { // a stream that never opened has none
					ports[p.Addr] = true
				}
			}
			fmt.Fprintf(g.stdout, "%s: %s in %.1fs, %d at a time (%d connections opened to %d ports)\n", out, humanBytes(rep.Size), rep.Seconds, conns, len(rep.Peers), len(ports))
			return nil
		},
	}
	cmd.Flags().StringVar(&tracker, "tracker", "", "course tracker, host:port (UDP)")
	cmd.Flags().StringVar(&srv, "server", "", "client-server mode: fetch the whole file from this peer, host:port")
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the file; a folder gets FILE inside it (default: the current folder)")
	cmd.Flags().IntVar(&conns, "conns", 5, "TCP connections at once, at most 5 (the server evicts a 6th)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "longest wait for any reply: a tracker query, a block, a pause in --server's stream, the grader")
	cmd.Flags().BoolVar(&stream, "stream", true, "one connection reads the whole file from its start as one request (the others take blocks from the end); false: block requests only")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary on stdout (per connection: bytes, blocks, why it ended)")
	cmd.Flags().StringVar(&iam, "iam", "", "grading flow: your id (digits)")
	cmd.Flags().StringVar(&grader, "grader", "", "grading flow: grading server, host:port")
	return cmd
}

// swarmOptions tune courseSwarm.
type swarmOptions struct {
	conns    int                               // connections at once, 1 to 5
	timeout  time.Duration                     // per tracker query and per block
	noStream bool                              // block requests only: no whole-file stream
	wrap     func(client.Source) client.Source // tests observe connections; nil in use
	show     func(*client.Download) func(bool) // starts a progress display, returns its stop (told whether complete); may be nil
}

// courseSwarm downloads name over up to o.conns connections with the
// shared queue scheduler: one connection streams the file from its start
// (a whole-file request on the fastest port known), the others request
// blocks from its end, and the slowest are moved to faster ports.
func courseSwarm(ctx context.Context, tracker netip.AddrPort, name, out string, o swarmOptions) (*client.Report, error) {
	conns, timeout := o.conns, o.timeout
	t := &course.Tracker{Addr: tracker, Name: name, Spacing: 2100 * time.Millisecond, Timeout: timeout}
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() { defer close(done); t.Run(tctx) }()
	defer func() { stop(); <-done }()
	cfg := client.Config{
		Peers: conns, StreamsPerPeer: 1, MaxBatch: 1, StallTimeout: timeout,
		NoPeerTimeout: 4 * timeout, ReplaceSlowest: time.Second, FinishDuplicates: true, Force: true,
		TailFirst: !o.noStream,
	}
	d := client.NewDownload(cfg, courseDiscoverer{t: t, stream: !o.noStream, wrap: o.wrap}, out)
	if o.show == nil {
		return d.Run(ctx)
	}
	stopShow := o.show(d)
	rep, err := d.Run(ctx)
	stopShow(err == nil)
	return rep, err
}

// idleReader reads from c, giving it a new read deadline before each
// read: a peer may be slow, but not silent for timeout. A cancel of ctx
// cuts any read.
type idleReader struct {
	ctx     context.Context
	c       net.Conn
	timeout time.Duration
}

func (i idleReader) Read(p []byte) (int, error) {
	course.SetReadDeadline(i.ctx, i.c, time.Now().Add(i.timeout))
	return i.c.Read(p)
}

// courseWhole fetches a whole file from one peer: "GET FILE". The peer
// may take timeout to start and may pause up to timeout between reads.
func courseWhole(ctx context.Context, g *globals, addr netip.AddrPort, name, out string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	course.SetDeadline(ctx, c, time.Now().Add(timeout))
	if _, err := io.WriteString(c, course.Request{Name: name, Kind: course.KindWhole}.String()+"\n"); err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	r := bufio.NewReader(idleReader{ctx, c, timeout})
	h, err := course.ReadHeader(r)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if h.Offset != 0 {
		return fmt.Errorf("%s: whole file answered from offset %d", addr, h.Offset)
	}
	part := out + ".part"
	f, err := os.Create(part)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, h.Length); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w (%s kept)", addr, err, part)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(part, out); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s: %s from %s\n", out, humanBytes(h.Length), addr)
	return nil
}

func newCourseServeCmd(g *globals) *cobra.Command {
	var (
		cfg       course.ServerConfig
		mode      string
		timeScale float64
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "Run a course-compatible tracker, peer ports and grading port",
		Example: `  shoal course serve --dir course/testdata
  shoal course serve --dir ./files --mode unlimited --tracker-port 0`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if cfg.Dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			m, err := course.ParseMode(mode)
			if err != nil {
				return usageError{err}
			}
			cfg.Mode, cfg.TimeScale, cfg.Logger = m, timeScale, log
			s, err := course.NewServer(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "tracker udp %s, fixed peer port %s", s.TrackerAddr(), s.FixedAddr())
			if cfg.GradingPort >= 0 {
				fmt.Fprintf(g.stdout, ", grading %s", s.GradingAddr())
			}
			fmt.Fprintf(g.stdout, " (%s mode)\n", mode)
			return s.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfg.Dir, "dir", "", "folder whose files are served (required)")
	cmd.Flags().StringVar(&cfg.ListenIP, "listen-ip", "127.0.0.1", "IP to listen on and to print in tracker replies")
	cmd.Flags().IntVar(&cfg.TrackerPort, "tracker-port", 19876, "tracker UDP port (0 picks a free one)")
	cmd.Flags().IntVar(&cfg.FixedPort, "fixed-port", 18765, "peer port that is always advertised (0 picks a free one)")
	cmd.Flags().IntVar(&cfg.Ports, "ports", 31, "other peer ports")
	cmd.Flags().IntVar(&cfg.GradingPort, "grading-port", 20001, "grading TCP port (0 picks a free one, -1 turns it off)")
	cmd.Flags().StringVar(&cfg.GradingFile, "grading-file", "redsox.jpg", "file of the grading challenge")
	cmd.Flags().StringVar(&mode, "mode", "testing", "pacing: testing, default or unlimited")
	cmd.Flags().Float64Var(&timeScale, "time-scale", 1, "multiply every delay by this (0.1 runs ten times faster)")
	return cmd
}
