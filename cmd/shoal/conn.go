package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/internal/certs"
	"github.com/shoalnet/shoal/server"
)

// connFlags are the security flags of every command that serves or dials.
type connFlags struct {
	tls   certs.Files
	token string
}

func (f *connFlags) register(cmd *cobra.Command, serves bool) {
	cmd.Flags().StringVar(&f.tls.Cert, "tls-cert", "", "PEM certificate: serve and dial over TLS (see `shoal certs`)")
	cmd.Flags().StringVar(&f.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	cmd.Flags().StringVar(&f.tls.CA, "tls-ca", "", "PEM CA: trust peers it signed; when serving, require client certificates from it (mutual TLS)")
	help := "token sent on registry announces (default $SHOAL_TOKEN)"
	if serves {
		help = "token this node's registry requires to announce, and sends to other registries (default $SHOAL_TOKEN)"
	}
	cmd.Flags().StringVar(&f.token, "token", envOr("SHOAL_TOKEN", ""), help)
}

// serverOptions are the credentials a server uses.
func (f *connFlags) serverOptions() ([]grpc.ServerOption, error) {
	if !f.tls.Enabled() {
		return nil, nil
	}
	opt, err := f.tls.ServerOption()
	if err != nil {
		return nil, usageError{err}
	}
	return []grpc.ServerOption{opt}, nil
}

// dialOptions are the credentials a dial uses: TLS when set, the token
// when set.
func (f *connFlags) dialOptions() ([]grpc.DialOption, error) {
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if f.tls.Enabled() {
		var err error
		if creds, err = f.tls.DialOption(); err != nil {
			return nil, usageError{err}
		}
	}
	opts := []grpc.DialOption{creds}
	if f.token != "" {
		opts = append(opts, server.TokenDialOption(f.token))
	}
	return opts, nil
}

// dial connects to addr with the flags' credentials.
func (f *connFlags) dial(addr string) (*grpc.ClientConn, error) {
	opts, err := f.dialOptions()
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", addr, err)}
	}
	return cc, nil
}
