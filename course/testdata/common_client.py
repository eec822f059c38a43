#!/usr/bin/python3
"""The common course client's behaviour, kept to check that shoal's course
server works for it unchanged: it splits each tracker line on ": ", sleeps
2 s between tracker queries, keeps one request per connection and reads
until BODY_BYTE_LENGTH bytes arrived.

    common_client.py TRACKER_HOST TRACKER_PORT FILE OUT
"""
import socket
import sys
import threading
import time
import queue

host, port, name, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def tracker():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(("GET %s.torrent\n" % name).encode(), (host, port))
    data, _ = s.recvfrom(4096)
    info = {}
    for line in data.decode().strip().split("\n"):
        k, v = line.split(": ")
        info[k] = v
    return info


info = tracker()
size = int(info["FILE_SIZE"])
blocks = (size + 9999) // 10000
work = queue.Queue()
for b in range(blocks):
    work.put(b)
result = bytearray(size)
peers = [(info["IP1"], int(info["PORT1"])), (info["IP2"], int(info["PORT2"]))]


def fetch(peer):
    s = socket.create_connection(peer)
    f = s.makefile("rb")
    while True:
        try:
            b = work.get_nowait()
        except queue.Empty:
            return
        s.sendall(("GET %s:%d\n" % (name, b)).encode())
        header = {}
        status = f.readline()
        assert status.startswith(b"200"), status
        while True:
            line = f.readline().decode().strip()
            if not line:
                break
            k, v = line.split(": ")
            header[k] = int(v)
        length, offset = header["BODY_BYTE_LENGTH"], header["BODY_BYTE_OFFSET_IN_FILE"]
        body = b""
        while len(body) < length:
            chunk = f.read(length - len(body))
            assert chunk, "closed"
            body += chunk
        result[offset:offset + length] = body


threads = [threading.Thread(target=fetch, args=(p,)) for p in peers]
for t in threads:
    t.start()
time.sleep(2)  # the client's fixed spacing before asking the tracker again
info2 = tracker()
more = threading.Thread(target=fetch, args=((info2["IP1"], int(info2["PORT1"])),))
more.start()
threads.append(more)
for t in threads:
    t.join()
with open(out, "wb") as fh:
    fh.write(result)
print("done", size)
