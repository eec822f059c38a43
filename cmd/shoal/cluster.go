package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/internal/cluster"
)

func newClusterCmd(g *globals) *cobra.Command {
	var (
		peers   int
		dir     string
		listen  string
		metrics string
		rate    int64
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
				specs[i].Rate = rate
			}
			nf := nodeFlags{metrics: metrics}
			m, err := nf.startMetrics(cmd.Context(), g)
			if err != nil {
				return err
			}
			c, err := cluster.Start(cmd.Context(), cluster.Config{
				Metrics: m, Dir: dir, IndexPath: defaultIndexPath(dir), Peers: specs, RegistryListen: listen, Logger: log,
			})
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
			fmt.Fprintf(g.stdout, "  shoal ls --registry %s\n", reg)
			if len(files) > 0 {
				fmt.Fprintf(g.stdout, "  shoal get %s --registry %s -o %s\n", files[0].ID, reg, shellQuote(baseName(files[0].Name)))
			}
			fmt.Fprintln(g.stdout, "Ctrl-C stops the cluster.")
			<-cmd.Context().Done()
			return c.Close()
		},
	}
	cmd.Flags().IntVar(&peers, "peers", 5, "number of peers, each on its own loopback port")
	cmd.Flags().StringVar(&dir, "dir", "", "folder every peer serves (required)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:7000", "registry address (port 0 picks a free one)")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics of all nodes at http://ADDR/metrics; off when empty")
	cmd.Flags().Int64Var(&rate, "rate", 0, "upload limit of each peer in bytes per second; 0 means unlimited")
	return cmd
}
