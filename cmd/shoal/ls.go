package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/client"
)

func newLsCmd(g *globals) *cobra.Command {
	var (
		registry string
		conn     connFlags
		timeout  time.Duration
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List the files the network holds, with their holder counts",
		Example: "  shoal ls --registry 127.0.0.1:7000",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			registry, err := registryAddr(cmd.Context(), "--registry", firstOf(registry, os.Getenv("SHOAL_REGISTRY")))
			if err != nil {
				return err
			}
			cc, err := conn.dial(registry)
			if err != nil {
				return err
			}
			defer cc.Close()
			files, err := client.ListFiles(cmd.Context(), cc, timeout)
			if err != nil {
				return conn.explain(cmd.Context(), registry, err)
			}
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(listing(files))
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSIZE\tHOLDERS\tPARTIAL\tCONTENT ID")
			for _, f := range files {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", f.Name, humanBytes(f.Size), f.Holders, f.PartialHolders, f.ID)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&registry, "registry", "", "registry to ask, host[:port] (default $SHOAL_REGISTRY, else "+defaultRegistry+")")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "longest wait for the registry's reply")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the files as a JSON array (name, content_id, size, holders, partial_holders)")
	conn.register(cmd, false)
	cmd.Flags().MarkHidden("token") // ls announces nothing
	return cmd
}

// listedFile is one file of `ls --json`.
type listedFile struct {
	Name           string `json:"name"`
	ContentID      string `json:"content_id"`
	Size           int64  `json:"size"`
	Holders        int    `json:"holders"`
	PartialHolders int    `json:"partial_holders"`
}

// listing is what `ls --json` prints: an array, empty rather than null.
func listing(files []client.ListedFile) []listedFile {
	out := make([]listedFile, 0, len(files))
	for _, f := range files {
		out = append(out, listedFile{Name: f.Name, ContentID: f.ID, Size: f.Size, Holders: f.Holders, PartialHolders: f.PartialHolders})
	}
	return out
}
