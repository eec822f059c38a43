// Package server holds shoal's gRPC services and their wiring.
//
// PeerService hands out manifests and streams chunks from a Files source;
// RegistryService keeps a lease table of peers and the files they hold and
// exchanges it with other registries. Handlers are thin: they validate the
// request, call the domain (chunkstore or the lease table) and send. Every
// domain error passes through one table, toStatus, on its way out.
//
// The wire types of gen/shoal/v1 stop at the handlers; the lease table and
// the announcer speak in Peer and FileInfo.
package server
