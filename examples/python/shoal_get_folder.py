#!/usr/bin/python3
"""A shoal folder downloader in Python: looks a folder up (by name, "photos/",
or tree id, "st1..."), fetches its tree and its files' manifests from one
holder and checks them against the tree id, then fetches the files' chunks
from several peers, many small files to a GetChunks call, verifying each.
Files land in OUT.part/, which is renamed to OUT once everything checks out.

    /usr/bin/python3 examples/python/shoal_get_folder.py photos/ --registry 127.0.0.1:7000 -o OUT
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

OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
BATCH_BYTES = 1 << 20  # chunk bytes per GetChunks call


def fetch_folder(stub, tid):
    """The tree's entries and {content id: manifest}, all checked."""
    entries = []
    for page in stub.GetTree(peer_pb2.GetTreeRequest(tree_id=tid), timeout=60):
        entries.extend(page.entries)
    for e in entries:
        shoal_common.check_path(e.path)
    paths = [e.path for e in entries]
    if paths != sorted(set(paths), key=lambda p: p.encode()):
        raise ValueError("tree entries out of order or twice")
    if shoal_common.tree_id(entries) != tid:
        raise ValueError("tree does not hash to %s" % tid)
    ids = sorted({e.content_id for e in entries if not e.dir and e.size > 0})
    manifests = {}
    for k in range(0, len(ids), 1000):
        batch = ids[k:k + 1000]
        got = [m for page in stub.GetManifests(peer_pb2.GetManifestsRequest(content_ids=batch), timeout=60) for m in page.manifests]
        if len(got) != len(batch):
            raise ValueError("%d manifests for %d files" % (len(got), len(batch)))
        for cid, m in zip(batch, got):
            shoal_common.verify_manifest(m, cid)
            manifests[cid] = m
    return entries, manifests


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="tree id (st1...) or folder name (photos/)")
    ap.add_argument("--registry", required=True, help="registry host:port")
    ap.add_argument("-o", "--output", required=True, help="the folder to write")
    ap.add_argument("--peers", type=int, default=5, help="peers to fetch from at once")
    args = ap.parse_args()

    reg = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(args.registry))
    req = registry_pb2.LookupRequest(limit=args.peers)
    if args.target.startswith("st1"):
        req.content_id = args.target
    else:
        req.name = args.target if args.target.endswith("/") else args.target + "/"
    try:
        found = reg.Lookup(req, timeout=10)
    except grpc.RpcError as e:
        sys.exit("shoal_get_folder: lookup %s: %s: %s" % (args.target, e.code().name, e.details()))
    tid = found.file.content_id
    peers = [p.address for p in found.peers]
    entries = manifests = None
    for addr in peers:
        try:
            entries, manifests = fetch_folder(peer_pb2_grpc.PeerServiceStub(grpc.insecure_channel(addr, options=OPTIONS)), tid)
            break
        except (grpc.RpcError, ValueError) as e:
            print("tree from %s: %s" % (addr, e), file=sys.stderr)
    if entries is None:
        sys.exit("shoal_get_folder: no peer gave a valid tree for %s" % tid)

    part = args.output + ".part"
    paths = {}  # content id -> the paths holding it
    for e in entries:
        target = os.path.join(part, *e.path.split("/"))
        if e.dir:
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.truncate(e.size)
        os.chmod(target, 0o755 if e.executable else 0o644)
        if e.size > 0:
            paths.setdefault(e.content_id, []).append(target)

    # One shared queue of batches: (content id, chunk) pairs worth about
    # BATCH_BYTES, many small files to a batch.
    todo = queue.Queue()
    batch, size = [], 0
    for cid, m in manifests.items():
        for i in range(len(m.chunk_hashes)):
            batch.append((cid, i))
            size += shoal_common.chunk_bounds(m, i)[1]
            if size >= BATCH_BYTES:
                todo.put(batch)
                batch, size = [], 0
    if batch:
        todo.put(batch)
    lock = threading.Lock()
    stats = {addr: 0 for addr in peers}
    failed = []

    def worker(addr):
        stub = peer_pb2_grpc.PeerServiceStub(grpc.insecure_channel(addr, options=OPTIONS))
        while True:
            try:
                batch = todo.get_nowait()
            except queue.Empty:
                return
            files, at = [], []
            for cid, i in batch:
                if not files or files[-1].content_id != cid:
                    files.append(peer_pb2.FileChunks(content_id=cid))
                files[-1].indexes.append(i)
            got = {}
            try:
                for msg in stub.GetChunks(peer_pb2.GetChunksRequest(files=files), timeout=60):
                    key = (files[msg.file].content_id, msg.index)
                    got[key] = got.get(key, b"") + msg.data
                for cid, i in batch:
                    m, data = manifests[cid], got.get((cid, i), b"")
                    off, n = shoal_common.chunk_bounds(m, i)
                    if len(data) != n or hashlib.sha256(data).digest() != m.chunk_hashes[i]:
                        raise ValueError("chunk %d of %s does not match its hash" % (i, cid))
                    for p in paths[cid]:
                        with open(p, "r+b") as out:
                            out.seek(off)
                            out.write(data)
                with lock:
                    stats[addr] += len(batch)
            except (grpc.RpcError, ValueError, IndexError) as e:
                with lock:
                    failed.append("%s: %s" % (addr, e))
                todo.put(batch)  # hand it back and drop this peer
                return

    threads = [threading.Thread(target=worker, args=(a,)) for a in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not todo.empty():
        sys.exit("shoal_get_folder: every peer failed: %s" % "; ".join(failed))
    os.replace(part, args.output)
    for addr, n in stats.items():
        print("%s\t%d chunks" % (addr, n))
    print("%s: %d files, verified %s" % (args.output, sum(1 for e in entries if not e.dir), tid))


if __name__ == "__main__":
    main()
