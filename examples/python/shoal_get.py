#!/usr/bin/python3
"""A shoal downloader in Python: looks a file up and fetches it from several
peers in parallel through one shared chunk queue, verifying every chunk.

    /usr/bin/python3 examples/python/shoal_get.py NAME_OR_ID --registry 127.0.0.1:7000 -o OUT
"""

import argparse
import hashlib
import os
import queue
import sys
import threading

import grpc

import shoal_common
from shoal.v1 import peer_pb2, peer_pb2_grpc, registry_pb2, registry_pb2_grpc

OPTIONS = [("grpc.max_receive_message_length", 2 << 20)]
BATCH = 4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="content id (sh1...) or file name")
    ap.add_argument("--registry", required=True, help="registry host:port")
    ap.add_argument("-o", "--output", required=True, help="where to write the file")
    ap.add_argument("--peers", type=int, default=5, help="peers to fetch from at once")
    args = ap.parse_args()

    reg = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(args.registry))
    req = registry_pb2.LookupRequest(limit=args.peers)
    if args.target.startswith("sh1"):
        req.content_id = args.target
    else:
        req.name = args.target
    try:
        found = reg.Lookup(req, timeout=10)
    except grpc.RpcError as e:
        sys.exit("shoal_get: lookup %s: %s: %s" % (args.target, e.code().name, e.details()))
    cid = found.file.content_id
    peers = [p.address for p in found.peers]

    manifest = None
    for addr in peers:
        stub = peer_pb2_grpc.PeerServiceStub(grpc.insecure_channel(addr, options=OPTIONS))
        try:
            m = stub.GetManifest(peer_pb2.GetManifestRequest(content_id=cid), timeout=10).manifest
            shoal_common.verify_manifest(m, cid)
            manifest = m
            break
        except (grpc.RpcError, ValueError) as e:
            print("manifest from %s: %s" % (addr, e), file=sys.stderr)
    if manifest is None:
        sys.exit("shoal_get: no peer gave a valid manifest for %s" % cid)

    part = args.output + ".part"
    with open(part, "wb") as f:
        f.truncate(manifest.size)
    todo = queue.Queue()
    for i in range(len(manifest.chunk_hashes)):
        todo.put(i)
    lock = threading.Lock()
    stats = {addr: 0 for addr in peers}
    failed = []

    def worker(addr):
        stub = peer_pb2_grpc.PeerServiceStub(grpc.insecure_channel(addr, options=OPTIONS))
        with open(part, "r+b") as out:
            while True:
                batch = []
                while len(batch) < BATCH:
                    try:
                        batch.append(todo.get_nowait())
                    except queue.Empty:
                        break
                if not batch:
                    return
                got = {}
                try:
                    for msg in stub.GetChunks(peer_pb2.GetChunksRequest(content_id=cid, indexes=batch), timeout=60):
                        got[msg.index] = got.get(msg.index, b"") + msg.data
                    for i in batch:
                        data = got.get(i, b"")
                        off, n = shoal_common.chunk_bounds(manifest, i)
                        if len(data) != n or hashlib.sha256(data).digest() != manifest.chunk_hashes[i]:
                            raise ValueError("chunk %d does not match its hash" % i)
                        out.seek(off)
                        out.write(data)
                        with lock:
                            stats[addr] += 1
                except (grpc.RpcError, ValueError) as e:
                    with lock:
                        failed.append("%s: %s" % (addr, e))
                    for i in batch:  # hand the batch back and drop this peer
                        todo.put(i)
                    return

    threads = [threading.Thread(target=worker, args=(a,)) for a in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not todo.empty():
        sys.exit("shoal_get: every peer failed: %s" % "; ".join(failed))
    os.replace(part, args.output)
    for addr, n in stats.items():
        print("%s\t%d chunks" % (addr, n))
    print("%s: %d bytes, verified %s" % (args.output, manifest.size, cid))


if __name__ == "__main__":
    main()
