package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/shoalnet/shoal/server"
)

func newRegistryCmd(g *globals) *cobra.Command {
	var nf nodeFlags
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run a registry alone, as a bootstrap node for discovery",
		Example: `  shoal registry --listen 127.0.0.1:7000
  shoal registry --listen 127.0.0.1:7001 --join 127.0.0.1:7000
  shoal registry --listen 10.0.0.2:7000 --gossip 10.0.0.2:7946 --join 10.0.0.1:7000 --token T --gossip-key K`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			scfg, dial, err := nf.serverConfig(cmd.Context(), log)
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", nf.listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			lc := nf.leaseConfig()
			gc, err := nf.gossipConfig(true)
			if err != nil {
				lis.Close()
				return err
			}
			stop, cancel := context.WithCancel(cmd.Context())
			jobs, ctx := errgroup.WithContext(stop)
			defer jobs.Wait()
			defer cancel() // first: a failed start ends the jobs begun
			metrics, err := nf.startMetrics(ctx, jobs, g)
			if err != nil {
				lis.Close()
				return err
			}
			node, err := server.NewNode(server.NodeConfig{
				Metrics: metrics, Listener: lis, Advertise: nf.advertise, Join: nf.join, Federate: true, Gossip: gc, Lease: lc,
				Server: scfg, DialOptions: dial, Logger: log,
			})
			if err != nil {
				lis.Close()
				return err
			}
			log.Info("registry serving", "addr", node.Addr(), "gossip", node.Gossip().Addr(), "join", nf.join, "tls", nf.conn.tls.Enabled(), "token", nf.conn.token != "", "gossip_key", len(gc.Key) > 0)
			jobs.Go(func() error { return node.Run(ctx) })
			err = jobs.Wait()
			log.Info("stopped", "addr", node.Addr(), "err", err)
			return err
		},
	}
	nf.register(cmd, "127.0.0.1:7000")
	return cmd
}
