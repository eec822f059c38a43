"""Helpers shared by the Python shoal examples: content ids and manifests.

The scheme matches chunkstore in the Go code: chunks of a power-of-two size
between 16 KiB and 1 MiB aiming at 64 chunks, SHA-256 per chunk, and a content
id of SHA-256("shoal/v1 file" || size || chunk size || Merkle root).
"""

import base64
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from shoal.v1 import peer_pb2  # noqa: E402  (path set above)

MIN_CHUNK = 16 << 10
MAX_CHUNK = 1 << 20
TARGET_CHUNKS = 64


def chunk_size_for(size):
    want = (size + TARGET_CHUNKS - 1) // TARGET_CHUNKS
    if want <= MIN_CHUNK:
        return MIN_CHUNK
    if want >= MAX_CHUNK:
        return MAX_CHUNK
    return 1 << (want - 1).bit_length()


def merkle_root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 == len(level):
                nxt.append(level[i])
            else:
                nxt.append(hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest())
        level = nxt
    return level[0]


def content_id(size, chunk_size, hashes):
    digest = hashlib.sha256(
        b"shoal/v1 file" + struct.pack(">QI", size, chunk_size) + merkle_root(hashes)
    ).digest()
    return "sh1" + base64.b32encode(digest).decode().lower().rstrip("=")


def hash_file(path, name):
    """Returns the manifest (a peer_pb2.Manifest) of the file at path."""
    size = os.path.getsize(path)
    cs = chunk_size_for(size)
    hashes = []
    with open(path, "rb") as f:
        while True:
            block = f.read(cs)
            if not block:
                break
            hashes.append(hashlib.sha256(block).digest())
    return peer_pb2.Manifest(
        name=name, size=size, chunk_size=cs, chunk_hashes=hashes,
        content_id=content_id(size, cs, hashes),
    )


def verify_manifest(m, want_id):
    """Raises ValueError unless manifest m hashes to want_id."""
    n = (m.size + m.chunk_size - 1) // m.chunk_size
    if m.chunk_size < 1 or m.chunk_size > MAX_CHUNK or len(m.chunk_hashes) != n:
        raise ValueError("manifest shape is inconsistent")
    got = content_id(m.size, m.chunk_size, list(m.chunk_hashes))
    if got != want_id:
        raise ValueError("manifest hashes to %s, want %s" % (got, want_id))


def chunk_bounds(m, i):
    off = i * m.chunk_size
    return off, min(m.chunk_size, m.size - off)
