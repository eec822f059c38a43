#!/usr/bin/python3
"""A shoal peer in Python: serves a folder over PeerService and announces it.

    /usr/bin/python3 examples/python/shoal_peer.py --dir DIR --listen 127.0.0.1:7080 \
        --registry 127.0.0.1:7000

Prints "ready ADDR" once it serves and the registry accepted its announce.
"""

import argparse
import os
import signal
import sys
import threading
import uuid
from concurrent import futures

import grpc

import shoal_common
from shoal.v1 import peer_pb2, peer_pb2_grpc, registry_pb2, registry_pb2_grpc

MAX_CHUNKS_PER_REQUEST = 4096


class Peer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(self, folder):
        self.folder = os.path.realpath(folder)
        self.by_id, self.by_name = {}, {}
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for fn in files:
                path = os.path.join(root, fn)
                if fn.startswith(".") or os.path.islink(path) or not os.path.isfile(path):
                    continue
                name = os.path.relpath(path, self.folder).replace(os.sep, "/")
                m = shoal_common.hash_file(path, name)
                self.by_id[m.content_id] = (m, path)
                self.by_name[name] = (m, path)

    def GetManifest(self, request, context):
        which = request.WhichOneof("file")
        table = self.by_id if which == "content_id" else self.by_name
        key = request.content_id if which == "content_id" else request.name
        if which is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name a file by content_id or name")
        if key not in table:
            context.abort(grpc.StatusCode.NOT_FOUND, "%r: file not found" % key)
        return peer_pb2.GetManifestResponse(manifest=table[key][0])

    def GetChunks(self, request, context):
        if request.content_id not in self.by_id:
            context.abort(grpc.StatusCode.NOT_FOUND, "%s: file not found" % request.content_id)
        m, path = self.by_id[request.content_id]
        want = list(request.indexes)
        for r in request.ranges:
            if r.end <= r.start:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty or reversed range")
            want.extend(range(r.start, r.end))
            if len(want) > MAX_CHUNKS_PER_REQUEST:
                break
        if not want:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no chunks asked for")
        if len(want) > MAX_CHUNKS_PER_REQUEST:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many chunks")
        if any(i >= len(m.chunk_hashes) for i in want):
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "chunk index out of range")
        with open(path, "rb") as f:
            for i in want:
                off, n = shoal_common.chunk_bounds(m, i)
                f.seek(off)
                yield peer_pb2.GetChunksResponse(index=i, offset=off, data=f.read(n))

    def holdings(self):
        return [registry_pb2.FileInfo(content_id=m.content_id, name=m.name, size=m.size)
                for m, _ in self.by_id.values()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder to share")
    ap.add_argument("--listen", default="127.0.0.1:0", help="host:port to serve on")
    ap.add_argument("--registry", required=True, help="registry host:port to announce to")
    args = ap.parse_args()

    peer = Peer(args.dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_send_message_length", 2 << 20)])
    peer_pb2_grpc.add_PeerServiceServicer_to_server(peer, server)
    host = args.listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(args.listen)
    server.start()
    addr = "%s:%d" % (host, port)

    reg = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(args.registry))
    info = registry_pb2.PeerInfo(peer_id="py-" + uuid.uuid4().hex[:12], address=addr, files=peer.holdings())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    first = True
    secret = ""  # proves the registration is ours on refresh and leave
    while not stop.is_set():
        try:
            resp = reg.Announce(registry_pb2.AnnounceRequest(peer=info, secret=secret), timeout=5)
            lease_ms, secret = resp.lease_ms, resp.secret
            if first:
                print("ready", addr, flush=True)
                first = False
            stop.wait(max(lease_ms / 3000.0, 0.2))
        except grpc.RpcError as e:
            print("announce failed:", e.code(), file=sys.stderr, flush=True)
            stop.wait(1.0)
    try:
        reg.Leave(registry_pb2.LeaveRequest(peer_id=info.peer_id, address=addr, secret=secret), timeout=2)
    except grpc.RpcError:
        pass
    server.stop(2).wait()


if __name__ == "__main__":
    main()
