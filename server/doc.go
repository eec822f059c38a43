// Package server holds shoal's gRPC services, the lease table behind the
// registry, and the node that composes them.
//
// The package has three parts, named here because they share a package:
//
//   - Services (peer.go, registry.go): PeerService hands out manifests and
//     streams chunks from a Files source; RegistryService answers from a
//     lease table. Handlers are thin: they validate the request, call the
//     domain (chunkstore or the lease table) and send. Every domain error
//     passes through one table, toStatus (status.go), on its way out, with
//     an ErrorInfo reason where one code has several meanings.
//   - Links to other shoal servers: the announcer (announcer.go) keeps a
//     peer registered at a registry; the federation (gossip.go) spreads
//     lease tables between registries over hashicorp/memberlist.
//   - The composition root, Node (node.go): one listener serving a peer, a
//     registry, or both, with its store, announcers and federation.
//
// The wire types of gen/shoal/v1 stop at the handlers; the lease table and
// the announcer speak in Peer and FileInfo.
//
// # Lease invariants
//
// The lease table (leases.go) keeps every registration with the time its
// lease ends. What holds at every call:
//
//   - Expiry is lazy: every method that reads or writes the table first
//     sweeps the entries whose lease ended (sweepLocked, from a heap keyed
//     by expiry), so no caller ever sees an expired entry and no timer or
//     goroutine is needed.
//   - An entry announced here is owned: it carries a secret, returned by
//     the first announce, that every refresh and the leave must present.
//     No one else can refresh, re-point or remove it; an entry learned
//     from another registry has no secret, and an announce from its own
//     address takes it over.
//   - A leave leaves a tombstone until the old lease would have ended, so
//     that gossip carrying the older live entry cannot bring the peer back.
//   - A learned entry never outlives the lease its peer was granted: it
//     ends a margin before the lease's end as its registry sent it, an
//     entry whose lease exceeds our own lease is refused, and it replaces
//     ours only when its lease ends later (the newest announce or leave
//     wins). It never replaces an entry owned here.
//   - Memory is bounded: MaxPeers registrations (tombstones included),
//     MaxFilesPerPeer files each.
//
// # Configuration
//
// Every Config of the package follows one rule, as the client's does: a
// zero field takes its default (the DefaultX functions list them), and a
// negative value turns a limit off where the field says so.
package server
