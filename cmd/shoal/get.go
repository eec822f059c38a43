package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// getFlags are the flags of `shoal get`.
type getFlags struct {
	conn     connFlags
	registry string
	out      string
	peers    int
	force    bool
	direct   bool
	cache    bool // --page-cache, the default; false asks for --direct
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
		Short: "Download a file or a folder from several peers at once",
		Long: `get looks a file or folder up in the registry (by content id, tree id or
name), fetches it from several peers at once through one shared chunk queue,
verifies every chunk, and renames OUT.part to OUT only once the whole file
checks out. Run the same command again after a crash or Ctrl-C to resume.

A folder (a name ending in / as ls shows it, or a tree id) is fetched the
same way, many small files to a request, into DIR.part/, and moved to DIR
once every file checks out. -o DIR is the folder itself; -o DIR/ puts it
inside DIR. A folder already at DIR with other contents is replaced only
with --force, which keeps the files that match.`,
		Example: `  shoal get sh1duwmf72tkrepbwt7okzr64vg53njbypmcpugyrfamvg6omdz3sja --registry 127.0.0.1:7000
  shoal get big.iso --registry 127.0.0.1:7000 -o /tmp/big.iso --peers 8
  shoal get photos/ -o ~/photos            # a folder and everything below it
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
	cmd.Flags().BoolVar(&f.force, "force", false, "replace an existing output file or folder with different contents (a folder's matching files are kept)")
	cmd.Flags().BoolVar(&f.direct, "direct", false, "write with O_DIRECT instead of through the page cache: less system time, more wall time where measured")
	cmd.Flags().BoolVar(&f.cache, "page-cache", true, "write through the page cache (the default; --page-cache=false is --direct)")
	cmd.Flags().MarkHidden("page-cache")
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
	cc, dial, err := f.connect()
	if err != nil {
		return err
	}
	defer cc.Close()
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
	if isFolderTarget(target, nil) {
		return getFolder(ctx, g, target, f, cc, dial, nil)
	}
	for attempt := 0; ; attempt++ {
		reg := f.lookup(cc, dial, target)
		defer reg.Close() // a download's Run closes them; an early return does not
		m, err = reg.Manifest(ctx)
		if attempt == 0 && isFolderTarget(target, err) {
			return getFolder(ctx, g, target, f, cc, dial, err)
		}
		var changed *client.NameChangedError
		if errors.As(err, &changed) && attempt < 2 {
			fmt.Fprintf(g.stderr, "%s changed on the network; fetching %s\n", changed.Name, changed.New)
			continue
		}
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
		cfg := f.config()
		cfg.Force = f.force
		if f.serve {
			rep, err = serveWhileGetting(ctx, g, f, cfg, reg, out, "")
		} else {
			d := client.NewDownload(cfg, reg, out)
			stop := showProgress(g, d, f.json, m.Size)
			rep, err = d.Run(ctx)
			stop(err == nil)
		}
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

// connect dials the registry, and returns it with the options that reach
// peers.
func (f *getFlags) connect() (*grpc.ClientConn, []grpc.DialOption, error) {
	cc, err := f.conn.dial(f.registry)
	if err != nil {
		return nil, nil, err
	}
	dial, err := f.conn.dialOptions()
	if err != nil {
		cc.Close()
		return nil, nil, err
	}
	return cc, append(dial, client.TuningOptions()...), nil
}

// lookup finds target through the registry at cc.
func (f *getFlags) lookup(cc *grpc.ClientConn, peers []grpc.DialOption, target string) *client.Registry {
	return &client.Registry{Target: target, Conn: cc, DialOptions: peers, CallTimeout: f.timeout, Ahead: f.peers}
}

// config is the download's configuration from the flags.
func (f *getFlags) config() client.Config {
	return client.Config{Peers: f.peers, Direct: f.direct || !f.cache, StallTimeout: f.stall, NoPeerTimeout: f.wait, MaxRate: int64(f.maxRate)}
}
