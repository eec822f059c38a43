package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalnet/shoal/internal/certs"
)

func newCertsCmd(g *globals) *cobra.Command {
	var (
		out   string
		hosts []string
		names []string
		valid time.Duration
	)
	cmd := &cobra.Command{
		Use:   "certs --out DIR",
		Short: "Make a local CA and certificates for a cluster (mutual TLS)",
		Long: `certs writes a CA (ca.pem, ca-key.pem) and, for each name, NAME.pem and
NAME-key.pem signed by it, valid for the given hosts, for serving and for
dialing. Give every node and client its own name; keep ca-key.pem away from
the nodes.`,
		Example: `  shoal certs --out ./tls --hosts 127.0.0.1,localhost --names registry,peer1,alice
  shoal serve --dir ./shared --tls-cert tls/peer1.pem --tls-key tls/peer1-key.pem --tls-ca tls/ca.pem`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{fmt.Errorf("--out is required")}
			}
			files, err := certs.Generate(out, hosts, names, valid)
			if err != nil {
				return err
			}
			for _, n := range names {
				fmt.Fprintf(g.stdout, "%s: --tls-cert %s --tls-key %s --tls-ca %s\n", n, files[n].Cert, files[n].Key, files[n].CA)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder to write the files to (required)")
	cmd.Flags().StringSliceVar(&hosts, "hosts", []string{"127.0.0.1", "::1", "localhost"}, "IP addresses and DNS names the certificates are valid for")
	cmd.Flags().StringSliceVar(&names, "names", []string{"node", "client"}, "one certificate per name")
	cmd.Flags().DurationVar(&valid, "valid", 365*24*time.Hour, "how long the certificates are valid")
	return cmd
}
