"""What interest-based subscriptions cost Redis: used_memory before and
after one client SUBSCRIBEs N bus channels of the shape the bus uses for
user feeds (docs/cluster.md). Needs redis-server and redis-cli on PATH.

    python3 bench/cluster/subscription_memory.py [N] [port]

Starts its own redis-server on `port` (default 63850) in a temp directory
and stops it at the end.
"""

import socket
import subprocess
import sys
import tempfile
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 63850


def used_memory():
    out = subprocess.run(["redis-cli", "-p", str(PORT), "info", "memory"], capture_output=True, text=True, check=True).stdout
    return int(next(l for l in out.splitlines() if l.startswith("used_memory:")).split(":")[1])


def resp(*args):
    s = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        s += b"$%d\r\n%s\r\n" % (len(a), a)
    return s


def main():
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen(
            ["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d],
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", PORT)).close()
                    break
                except OSError:
                    time.sleep(0.05)
            before = used_memory()
            sock = socket.create_connection(("127.0.0.1", PORT))
            # Drain the confirmations so they do not sit in Redis' output buffer.
            threading.Thread(target=lambda: [None for _ in iter(lambda: sock.recv(1 << 20), b"")], daemon=True).start()
            batch = 1000
            for i in range(0, N, batch):
                names = [f"herald:bus:k:1:/:4:feed:user{j:07d}" for j in range(i, min(i + batch, N))]
                sock.sendall(resp("SUBSCRIBE", *names))
            time.sleep(3)
            after = used_memory()
            print(f"{N} channels, one subscriber each: used_memory {before} -> {after} bytes, "
                  f"{(after - before) / N:.0f} bytes per channel, {(after - before) / 2**20:.1f} MiB in all")
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
