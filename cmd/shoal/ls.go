package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

func newLsCmd(g *globals) *cobra.Command {
	var (
		registry string
		conn     connFlags
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List the files the network holds, with their holder counts",
		Example: "  shoal ls --registry 127.0.0.1:7000",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if registry == "" {
				return usageError{fmt.Errorf("--registry is required (or set SHOAL_REGISTRY)")}
			}
			cc, err := conn.dial(registry)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			resp, err := shoalv1.NewRegistryServiceClient(cc).ListFiles(ctx, &shoalv1.ListFilesRequest{}, grpc.WaitForReady(false))
			if err != nil {
				return fmt.Errorf("list files at %s: %w", registry, describe(err))
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tHOLDERS\tPARTIAL\tCONTENT ID")
			for _, f := range resp.GetFiles() {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", f.GetFile().GetName(), humanBytes(int64(f.GetFile().GetSize())), f.GetHolders(), f.GetPartialHolders(), f.GetFile().GetContentId())
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&registry, "registry", envOr("SHOAL_REGISTRY", ""), "registry to ask, host:port (default $SHOAL_REGISTRY)")
	conn.register(cmd, false)
	return cmd
}
