package server

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// registryWrites are the calls peers make that change a registry: with a
// token set, only callers presenting it may make them. Lookups stay open.
var registryWrites = map[string]bool{
	"/shoal.v1.RegistryService/Announce": true,
	"/shoal.v1.RegistryService/Leave":    true,
}

// tokenOptions require "authorization: Bearer TOKEN" on registry writes.
func tokenOptions(token string) []grpc.ServerOption {
	if token == "" {
		return nil
	}
	check := func(ctx context.Context, method string) error {
		md, _ := metadata.FromIncomingContext(ctx)
		switch {
		case registryWrites[method] && token != "":
			if presents(md.Get("authorization"), "Bearer "+token) {
				return nil
			}
			return status.Error(codes.Unauthenticated, "this registry needs a token to announce (--token or SHOAL_TOKEN)")
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// presents reports whether one of vals is want, in constant time.
func presents(vals []string, want string) bool {
	for _, v := range vals {
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(v)), []byte(want)) == 1 {
			return true
		}
	}
	return false
}

// tokenCreds sends the registry token with every call.
type tokenCreds struct {
	token  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// TokenDialOption sends token with every call on a connection. Over a
// plaintext connection the token can be read by anyone on the path: use
// TLS beyond loopback.
func TokenDialOption(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(tokenCreds{token: token})
}

var _ credentials.PerRPCCredentials = tokenCreds{}
