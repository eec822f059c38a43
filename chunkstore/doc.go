// Package chunkstore turns files into manifests and serves their chunks.
//
// A file is cut into fixed-size chunks; each chunk has a SHA-256 digest, and
// the file's content id hashes its size, chunk size and the Merkle root of the
// chunk digests. Knowing a content id is enough to check a manifest from any
// peer, and the manifest is enough to check every chunk.
//
// A Store hashes the regular files under one folder in the background, keeps
// an index so that a restart does not rehash unchanged files, and reads
// chunks with positional reads through an os.Root, so no name can reach a
// file outside the folder. Before and after each read the store compares the
// file's size, modification and change times with those it hashed; a file
// that changed is withdrawn and rehashed, and its stale chunks are never
// served.
//
// This is the only package that touches file bytes.
package chunkstore
