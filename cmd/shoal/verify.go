package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// exitDiffers is verify's exit code for a file that does not match.
const exitDiffers = 1

func newVerifyCmd(g *globals) *cobra.Command {
	var (
		registry string
		conn     connFlags
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify FILE CONTENT_ID",
		Short: "Check a local file against a content id, and say which chunks differ",
		Long: `verify hashes FILE and compares it with CONTENT_ID. A match needs no
network. A file that differs is compared chunk by chunk with the manifest of
CONTENT_ID, fetched from the registry's holders, to say which chunks differ.
Exit 0 when the file matches, 1 when it does not.`,
		Example: `  shoal verify big.iso sh1duwmf72tkrepbwt7okzr64vg53njbypmcpugyrfamvg6omdz3sja
  shoal verify big.iso sh1duwmf... --registry 10.0.0.5`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := chunkstore.ParseID(args[1])
			if err != nil {
				return usageError{err}
			}
			ctx := cmd.Context()
			local, err := hashFile(ctx, args[0])
			if err != nil {
				return err
			}
			if local.ID == id {
				fmt.Fprintf(g.stdout, "%s matches %s (%s, %s)\n", args[0], id, humanBytes(local.Size), plural(local.NumChunks(), "chunk"))
				return nil
			}
			addr, err := registryAddr(ctx, "--registry", firstOf(registry, os.Getenv("SHOAL_REGISTRY")))
			if err != nil {
				return err
			}
			cc, err := conn.dial(addr)
			if err != nil {
				return err
			}
			defer cc.Close()
			dial, err := conn.dialOptions()
			if err != nil {
				return err
			}
			want, err := (&client.Registry{Target: id.String(), Conn: cc, DialOptions: append(dial, client.TuningOptions()...), CallTimeout: timeout}).Manifest(ctx)
			if err != nil {
				return codedError{exitDiffers, fmt.Errorf("%s does not match %s; which chunks differ is unknown: %w", args[0], id, conn.explain(ctx, addr, err))}
			}
			return codedError{exitDiffers, errors.New(diffReport(args[0], local, want))}
		},
	}
	cmd.Flags().StringVar(&registry, "registry", "", "registry to fetch CONTENT_ID's manifest from when the file differs, host[:port] (default $SHOAL_REGISTRY, else "+defaultRegistry+")")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "longest wait for the registry's reply, or a peer's manifest")
	conn.register(cmd, false)
	cmd.Flags().MarkHidden("token")
	return cmd
}

// diffReport says how local differs from want: size, and the chunks whose
// hashes differ (the first few by index, then a count).
func diffReport(name string, local, want *chunkstore.Manifest) string {
	if local.Size != want.Size || local.ChunkSize != want.ChunkSize {
		return fmt.Sprintf("%s does not match %s: %s, want %s", name, want.ID, humanBytes(local.Size), humanBytes(want.Size))
	}
	var bad []int
	for i := range want.Hashes {
		if local.Hashes[i] != want.Hashes[i] {
			bad = append(bad, i)
		}
	}
	shown := bad
	if len(shown) > 10 {
		shown = shown[:10]
	}
	msg := fmt.Sprintf("%s does not match %s: %s of %d differ (chunks of %s): %v", name, want.ID, plural(len(bad), "chunk"), want.NumChunks(), humanBytes(int64(want.ChunkSize)), shown)
	if len(bad) > len(shown) {
		msg += fmt.Sprintf(" and %d more", len(bad)-len(shown))
	}
	return msg
}
