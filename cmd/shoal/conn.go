package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/certs"
	"github.com/shoalnet/shoal/server"
)

// connFlags are the security flags of every command that serves or dials.
type connFlags struct {
	tls   certs.Files
	token string
}

func (f *connFlags) register(cmd *cobra.Command, serves bool) {
	if serves {
		cmd.Flags().StringVar(&f.tls.Cert, "tls-cert", "", "`PEM` certificate to serve and dial over TLS (make one with shoal certs)")
		cmd.Flags().StringVar(&f.tls.Key, "tls-key", "", "`PEM` private key of --tls-cert")
		cmd.Flags().StringVar(&f.tls.CA, "tls-ca", "", "`PEM` CA: trust peers it signed, and require client certificates from it (mutual TLS)")
	} else {
		cmd.Flags().StringVar(&f.tls.Cert, "tls-cert", "", "`PEM` client certificate, for servers that require one (make one with shoal certs)")
		cmd.Flags().StringVar(&f.tls.Key, "tls-key", "", "`PEM` private key of --tls-cert")
		cmd.Flags().StringVar(&f.tls.CA, "tls-ca", "", "`PEM` CA that signed the servers' certificates: dial over TLS")
	}
	help := "`TOKEN` sent on registry announces (default $SHOAL_TOKEN)"
	if serves {
		help = "`TOKEN` this node's registry requires to announce, and sends to other registries (default $SHOAL_TOKEN)"
	}
	cmd.Flags().StringVar(&f.token, "token", "", help)
}

// resolve fills what the flags leave to the environment: the token from
// SHOAL_TOKEN (read here, so that --help never prints it).
func (f *connFlags) resolve() {
	if f.token == "" {
		f.token = strings.TrimSpace(os.Getenv("SHOAL_TOKEN"))
	}
}

// serverOptions are the credentials a server uses.
func (f *connFlags) serverOptions() ([]grpc.ServerOption, error) {
	f.resolve()
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
	f.resolve()
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

// defaultRegistry is where get, ls and serve look for a registry when
// neither --registry nor SHOAL_REGISTRY names one: where `shoal cluster`
// and `shoal registry` listen by default.
const defaultRegistry = "127.0.0.1:7000"

// defaultPort is the registry port assumed when an address has none.
const defaultPort = "7000"

// registryAddr checks a registry address given on the command line and
// completes it: host:port, a bare host (port 7000), never a URL. A host
// name must resolve.
func registryAddr(ctx context.Context, flag, s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return defaultRegistry, nil
	}
	if i := strings.Index(s, "://"); i >= 0 {
		hint := strings.TrimSuffix(s[i+3:], "/")
		return "", usageError{fmt.Errorf("%s %s: give host:port, not a URL (try %s %s)", flag, s, flag, hint)}
	}
	host, port, err := net.SplitHostPort(s)
	if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil && err != nil {
		host, port, err = ip.String(), defaultPort, nil // an IPv6 address without a port
	}
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && strings.Contains(ae.Err, "missing port") {
			host, port = strings.Trim(s, "[]"), defaultPort
		} else {
			return "", usageError{fmt.Errorf("%s %s: not host:port", flag, s)}
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", usageError{fmt.Errorf("%s %s: port %q is not 1 to 65535", flag, s, port)}
	}
	if host != "" && net.ParseIP(host) == nil {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := net.DefaultResolver.LookupHost(ctx, host); err != nil {
			return "", fmt.Errorf("%s %s: unknown host %s", flag, s, host)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// firstOf returns the first non-empty value.
func firstOf(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// registryList checks each address of a list flag.
func registryList(ctx context.Context, flag string, list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, a := range list {
		if strings.TrimSpace(a) == "" {
			continue
		}
		addr, err := registryAddr(ctx, flag, a)
		if err != nil {
			return nil, err
		}
		out = append(out, addr)
	}
	return out, nil
}

// explain adds to an unreachable error what a TLS probe of addr tells: a
// plaintext call to a TLS server reads as a reset connection, and a TLS
// call without the client certificate a server requires as a broken pipe.
func (f *connFlags) explain(ctx context.Context, addr string, err error) error {
	if !errors.Is(err, client.ErrUnreachable) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} // a probe: nothing is sent
	c, derr := d.DialContext(ctx, "tcp", addr)
	if derr != nil {
		return err // not a TLS server either
	}
	defer c.Close()
	if !f.tls.Enabled() {
		return fmt.Errorf("%s requires TLS: give --tls-ca (see shoal certs): %w", addr, err)
	}
	if f.tls.Cert != "" {
		return err
	}
	// TLS 1.3 sends a missing client certificate's alert after the
	// handshake: read to receive it. crypto/tls reports a received alert
	// with an unexported type, so only its text tells which it is.
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, rerr := c.Read(make([]byte, 1))
	if rerr != nil && (strings.Contains(rerr.Error(), "certificate required") || strings.Contains(rerr.Error(), "bad certificate")) {
		return fmt.Errorf("%s requires a client certificate: give --tls-cert and --tls-key: %w", addr, err)
	}
	return err
}
