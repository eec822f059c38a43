package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/internal/certs"
	"github.com/shoalnet/shoal/internal/cluster"
)

func newClusterCmd(g *globals) *cobra.Command {
	var (
		peers   int
		dir     string
		listen  string
		metrics string
		rate    byteSize
		rescan  time.Duration
		useTLS  bool
		token   string
	)
	cmd := &cobra.Command{
		Use:   "cluster --dir DIR",
		Short: "Run a registry and N peers serving DIR on loopback, in one process",
		Long: `cluster starts a registry and N peers on loopback ports, every peer serving
DIR, and prints the registry address and a ready-to-run download command.
Ctrl-C stops everything; each peer leaves the registry on the way out.`,
		Example: `  shoal cluster --peers 5 --dir ./shared
  shoal ls --registry 127.0.0.1:7000`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if dir == "" {
				return usageError{fmt.Errorf("--dir is required")}
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return usageError{fmt.Errorf("--dir %s: not a folder", dir)}
			}
			if peers < 1 || peers > 1000 {
				return usageError{fmt.Errorf("--peers %d: use 1 to 1000", peers)}
			}
			specs := make([]cluster.PeerSpec, peers)
			for i := range specs {
				specs[i].Rate = int64(rate)
			}
			nf := nodeFlags{metrics: metrics}
			stop, cancel := context.WithCancel(cmd.Context())
			jobs, ctx := errgroup.WithContext(stop)
			defer jobs.Wait()
			defer cancel() // first: a failed start ends the jobs begun
			m, err := nf.startMetrics(ctx, jobs, g)
			if err != nil {
				return err
			}
			token = firstOf(token, os.Getenv("SHOAL_TOKEN"))
			ccfg := cluster.Config{Token: token, RescanInterval: rescan}
			var clientFlags string
			if useTLS {
				tlsDir, err := os.MkdirTemp("", "shoal-certs-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tlsDir)
				files, err := certs.Generate(tlsDir, []string{"127.0.0.1", "::1", "localhost"}, []string{"node", "client"}, 30*24*time.Hour)
				if err != nil {
					return err
				}
				srv, err := files["node"].ServerOption()
				if err != nil {
					return err
				}
				dial, err := files["node"].DialOption()
				if err != nil {
					return err
				}
				ccfg.ServerOptions, ccfg.DialOptions = []grpc.ServerOption{srv}, []grpc.DialOption{dial}
				cf := files["client"]
				clientFlags = fmt.Sprintf(" --tls-cert %s --tls-key %s --tls-ca %s", cf.Cert, cf.Key, cf.CA)
				fmt.Fprintf(g.stdout, "mutual TLS on; client certificate in %s (removed on exit)\n", tlsDir)
			}
			ccfg.Metrics, ccfg.Dir, ccfg.IndexPath, ccfg.Peers, ccfg.RegistryListen, ccfg.Logger = m, dir, defaultIndexPath(dir), specs, listen, log
			c, err := cluster.Start(ctx, ccfg)
			if err != nil {
				return err
			}
			reg := c.Registry.Addr()
			fmt.Fprintf(g.stdout, "registry %s with %d peers:", reg, len(c.Peers))
			for _, p := range c.Peers {
				fmt.Fprintf(g.stdout, " %s", p.Addr())
			}
			fmt.Fprintln(g.stdout)
			files := c.Store.List()
			fmt.Fprintf(g.stdout, "serving %d files from %s\n", len(files), dir)
			fmt.Fprintf(g.stdout, "  shoal ls --registry %s%s\n", reg, clientFlags)
			if len(files) > 0 {
				fmt.Fprintf(g.stdout, "  shoal get %s --registry %s -o %s%s\n", files[0].ID, reg, shellQuote(baseName(files[0].Name)), clientFlags)
			}
			fmt.Fprintln(g.stdout, "Ctrl-C stops the cluster.")
			<-ctx.Done()
			if err := c.Close(); err != nil {
				return err
			}
			return jobs.Wait()
		},
	}
	cmd.Flags().IntVar(&peers, "peers", 5, "number of peers, each on its own loopback port")
	cmd.Flags().StringVar(&dir, "dir", "", "folder every peer serves (required)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7000", "registry address (port 0 picks a free one)")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics of all nodes at http://ADDR/metrics; off when empty")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "mutual TLS between all nodes and clients, with certificates made for this run")
	cmd.Flags().StringVar(&token, "token", "", "token the registry requires to announce (default $SHOAL_TOKEN)")
	cmd.Flags().DurationVar(&rescan, "rescan", 5*time.Second, "how often the folder is rescanned for added, edited and removed files")
	cmd.Flags().Var(&rate, "rate", "upload limit of each peer per second, as 10M or 512K; 0 means unlimited")
	return cmd
}
