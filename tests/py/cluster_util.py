"""A cluster on loopback for tests: a real ``redis-server`` and N ``herald`` nodes
joined over it (``[cluster]``, docs/cluster.md).

- ``RedisServer(port)``: a throwaway redis-server (no persistence, temp dir); ``kill()``
  is SIGKILL, ``restart()`` starts it again on the same port.
- ``start_node(name, redis, prefix, extra="")``: a Herald node (conftest's ``Herald``)
  named ``name`` in the cluster at ``redis`` under key prefix ``prefix``.
- ``cluster(n, port)``: context manager yielding ``(redis, [nodes])``, all stopped after.

A missing redis-server fails loudly (``tests/services/install.sh`` installs it); nothing
is skipped. Each test should use its own ``prefix`` (``uid("c")``) so runs never see each
other's keys, and ports from the range its suite owns.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from conftest import Herald, build_config, uid


def _redis_bin() -> str:
    path = shutil.which("redis-server")
    if not path:
        pytest.fail("redis-server not found: run tests/services/install.sh (tests never skip)", pytrace=False)
    return path


class RedisServer:
    def __init__(self, port: int, extra: list[str] | None = None):
        self.port = port
        self.extra = extra or []
        self.dir = tempfile.mkdtemp(prefix="herald-redis-")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0):
        args = [_redis_bin(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited (code {self.proc.returncode})", pytrace=False)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        pytest.fail(f"redis-server on port {self.port} did not answer PING within {timeout}s", pytrace=False)

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_section(redis_url: str, prefix: str, heartbeat_ms: int = 200, ttl_ms: int = 1000, address=None) -> str:
    lines = ["[cluster]", f'redis = "{redis_url}"', f'prefix = "{prefix}"']
    lines += [f"heartbeat_ms = {heartbeat_ms}", f"ttl_ms = {ttl_ms}"]
    if address:
        lines.append(f'address = "{address}"')
    return "\n".join(lines) + "\n"


def start_node(name: str, redis: RedisServer, prefix: str, extra: str = "", **cluster_kw) -> Herald:
    section = cluster_section(redis.url, prefix, **cluster_kw)
    return Herald(build_config("@DATA_DIR@", extra=section + extra, node_name=name))


@contextlib.contextmanager
def cluster(n: int, redis_port: int, extra: str = "", **cluster_kw):
    redis = RedisServer(redis_port)
    prefix = uid("c") + ":"
    nodes: list[Herald] = []
    try:
        for i in range(n):
            nodes.append(start_node(f"n{i + 1}", redis, prefix, extra=extra, **cluster_kw))
        yield redis, nodes
    finally:
        for h in nodes:
            h.stop()
        redis.stop()


def wait_until(pred, timeout: float = 5.0, what: str = "condition", every: float = 0.05):
    """Polls ``pred`` until it returns a truthy value (returned) or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


__all__ = ["RedisServer", "cluster", "cluster_section", "start_node", "wait_until", "os"]
