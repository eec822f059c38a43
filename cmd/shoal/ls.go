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
		Use:   "ls [PREFIX]",
		Short: "List the files and folders the network holds, with their holder counts",
		Long: `ls lists what the registry knows: files, and folders (a trailing / and
their file count; ./ is a peer's whole shared folder), with how many live
peers hold each, all of it or part. PREFIX keeps the names that start with it.`,
		Example: "  shoal ls --registry 127.0.0.1:7000\n  shoal ls models/",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			registry, err := registryAddr(cmd.Context(), "--registry", firstOf(registry, os.Getenv("SHOAL_REGISTRY")))
			if err != nil {
				return err
			}
			cc, err := conn.dial(registry)
			if err != nil {
				return err
			}
			defer cc.Close()
			files, err := client.ListFiles(cmd.Context(), cc, prefix, timeout)
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
				name := f.Name
				if f.Folder {
					name += " (" + plural(f.Files, "file") + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", name, humanBytes(f.Size), f.Holders, f.PartialHolders, f.ID)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&registry, "registry", "", "registry to ask, host[:port] (default $SHOAL_REGISTRY, else "+defaultRegistry+")")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "longest wait for the registry's reply")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the files as a JSON array (name, content_id, size, folder, file_count, holders, partial_holders)")
	conn.register(cmd, false)
	cmd.Flags().MarkHidden("token") // ls announces nothing
	return cmd
}

// listedFile is one file of `ls --json`.
type listedFile struct {
	Name           string `json:"name"`
	ContentID      string `json:"content_id"`
	Size           int64  `json:"size"`
	Folder         bool   `json:"folder,omitempty"`
	FileCount      int    `json:"file_count,omitempty"`
	Holders        int    `json:"holders"`
	PartialHolders int    `json:"partial_holders"`
}

// listing is what `ls --json` prints: an array, empty rather than null.
func listing(files []client.ListedFile) []listedFile {
	out := make([]listedFile, 0, len(files))
	for _, f := range files {
		out = append(out, listedFile{Name: f.Name, ContentID: f.ID, Size: f.Size, Folder: f.Folder, FileCount: f.Files, Holders: f.Holders, PartialHolders: f.PartialHolders})
	}
	return out
}
