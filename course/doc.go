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
// One of the client's connections is a Stream: a whole-file request
// ("GET f"), which the server paces per 1000 bytes like a block but delays
// only once, read from the file's start while the block connections take
// blocks from the end (see the NOTES on Stream). The stream moves to a
// faster port when the Tracker's measurements say the restart pays.
//
// This package imports neither client nor server.
package course
