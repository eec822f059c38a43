package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

func newDemoCmd(g *globals) *cobra.Command {
	var (
		size     byteSize
		slowRate byteSize
		keep     bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local cluster with a slow and a quitting peer, and download from it",
		Long: `demo shows shoal's main job with no setup: it starts a registry and five
peers on loopback (one of them slow, one that quits half way), writes a test
file, downloads it with the fan-out client, checks it byte for byte, and
prints what each peer contributed.`,
		Example: "  shoal demo\n  shoal demo --size 1G",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if size < 1 || size > 64<<30 {
				return usageError{fmt.Errorf("--size %s: use 1 byte to 64 GiB", humanBytes(int64(size)))}
			}
			return runDemo(cmd.Context(), g, int64(size), int64(slowRate), keep)
		},
	}
	size, slowRate = 256<<20, 20<<20
	cmd.Flags().Var(&size, "size", "size of the test file (256M by default; suffixes K, M, G)")
	cmd.Flags().Var(&slowRate, "slow-rate", "upload limit of the slow peer, per second (20M by default)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the demo's temporary folder")
	return cmd
}

func runDemo(ctx context.Context, g *globals, size, slowRate int64, keep bool) error {
	tmp, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Fprintf(g.stdout, "keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	shared := filepath.Join(tmp, "shared")
	if err := os.Mkdir(shared, 0o755); err != nil {
		return err
	}
	src := filepath.Join(shared, "demo.bin")
	fmt.Fprintf(g.stdout, "writing a %s test file...\n", humanBytes(size))
	want, err := writeRandomFile(src, size)
	if err != nil {
		return err
	}
	roles := []string{"fast", "fast", "fast", "slow", "quits mid-way"}
	specs := []cluster.PeerSpec{{}, {}, {}, {Rate: slowRate}, {QuitAfter: size / 10}}
	c, err := cluster.Start(ctx, cluster.Config{Dir: shared, Peers: specs})
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(g.stdout, "registry %s, %d peers on loopback\n", c.Registry.Addr(), len(c.Peers))
	role := map[string]string{}
	for i, p := range c.Peers {
		role[p.Addr()] = roles[i]
	}

	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	out := filepath.Join(tmp, "downloaded.bin")
	d := client.NewDownload(client.Config{StallTimeout: 5 * time.Second}, &client.Registry{Target: "demo.bin", Conn: cc}, out)
	stop := showProgress(g, d, false, size)
	rep, err := d.Run(ctx)
	stop(err == nil)
	if err != nil {
		return err
	}
	got, err := sha256File(out)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("downloaded file differs from the original")
	}

	tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
	// The last column is not padded: no trailing spaces when piped. Drop
	// reasons are short values, so rows fit 100 columns.
	fmt.Fprintln(tw, "PEER\tROLE\tCHUNKS\tBYTES\tSHARE\tDROPPED")
	for _, p := range rep.Peers {
		dropped := string(p.Dropped)
		if dropped == "" {
			dropped = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.1f%%\t%s\n", p.Addr, role[p.Addr], p.Chunks, humanBytes(p.Bytes), 100*float64(p.Bytes)/float64(rep.Size), dropped)
	}
	tw.Flush()
	fmt.Fprintf(g.stdout, "\n%s in %.2fs: %s, byte-identical (sha256 %x)\ncontent id %s\n",
		humanBytes(rep.Size), rep.Seconds, humanRate(rep.BytesFetched, rep.Seconds), got[:8], rep.ContentID)
	return nil
}

// writeRandomFile writes size pseudo-random bytes and returns their SHA-256.
func writeRandomFile(path string, size int64) ([]byte, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	r := rand.NewChaCha8([32]byte{'s', 'h', 'o', 'a', 'l'})
	if _, err := io.CopyN(io.MultiWriter(f, h), r, size); err != nil {
		f.Close()
		return nil, err
	}
	return h.Sum(nil), f.Close()
}

func sha256File(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
