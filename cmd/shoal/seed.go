package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/swarm"
	"github.com/shoalnet/shoal/server"
)

// serveWhileGetting downloads as a swarm member: it serves verified chunks,
// announces itself to the registry, and seeds after finishing.
// A folder (folder set to its name on the network) is served and announced
// by its tree id.
func serveWhileGetting(ctx context.Context, g *globals, f getFlags, cfg client.Config, reg *client.Registry, out, folder string) (*client.Report, error) {
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
	var trees client.TreeDiscoverer
	if folder != "" {
		trees = reg
	}
	return swarm.Get(ctx, swarm.Config{
		Folder: trees, FolderName: folder,
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
