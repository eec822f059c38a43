// Package course speaks a university course's raw TCP/UDP P2P protocol
// (UDP tracker "GET f.torrent", TCP "GET f:n" for 10000-byte blocks), both
// as a client and as a compatible server.
//
// The client side satisfies the client package's Source and Discoverer
// interfaces by method set, so shoal's shared-queue scheduler drives course
// peers like gRPC peers: one TCP connection per source, one request in
// flight per connection, at most five connections. The server side serves
// any file of a folder with the reference server's timing (a pre-
// transmission delay, 1000 bytes per event, a fixed pause per port),
// connection limit with random eviction, port churn, tracker rate limit and
// grading port, scaled by a factor so tests run in seconds; unlike the
// reference it never crashes or wedges on what a client sends.
//
// This package imports neither client nor server.
package course
