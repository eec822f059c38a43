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


def id_bytes(text, prefix):
    """The 32 bytes of a content id ("sh1...") or tree id ("st1...")."""
    if not text.startswith(prefix) or len(text) != len(prefix) + 52:
        raise ValueError("%r is not a %s... id" % (text, prefix))
    return base64.b32decode(text[len(prefix):].upper() + "====")


def uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tree_id(entries):
    """The tree id of entries (peer_pb2.TreeEntry, in canonical order):
    SHA-256("shoal/v1 tree" || per entry: uvarint path length, path, a flag
    byte (1 folder, 2 executable), and for a file uvarint size and the
    32-byte content id)."""
    h = hashlib.sha256(b"shoal/v1 tree")
    for e in entries:
        path = e.path.encode()
        h.update(uvarint(len(path)) + path + bytes([(1 if e.dir else 0) | (2 if e.executable else 0)]))
        if not e.dir:
            h.update(uvarint(e.size) + id_bytes(e.content_id, "sh1"))
    return "st1" + base64.b32encode(h.digest()).decode().lower().rstrip("=")


def check_path(p):
    """Raises ValueError for a tree path that could leave its folder."""
    parts = p.split("/")
    if not p or p.startswith("/") or "\x00" in p or "\\" in p or any(x in ("", ".", "..") for x in parts):
        raise ValueError("tree entry %r: absolute, or with an empty, . or .. element" % p)
