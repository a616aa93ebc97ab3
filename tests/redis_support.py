"""A real redis-server on a free loopback port, for the workers and shared-store tests."""
from __future__ import annotations

import http.client
import itertools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from support import Server, free_port, wait_for


class RedisServer:
    """`redis-server` with no persistence in its own folder; stop() and start() keep the port,
    so a test can restart it under a running app."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._databases = itertools.count(0)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A URL of a database no other test used (0..15), so modules do not see each other."""
        db = next(self._databases)
        assert db < 16, "redis-server has 16 databases; use another RedisServer"
        return self.url(db)

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: run .ci/setup --test")
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=1)

        def answers():
            try:
                return client.ping()
            except redis.RedisError:
                return False
        wait_for(answers, 10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def worker_pids(server) -> list[int]:
    """The live children of a `serve --workers N` parent."""
    path = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def wait_workers(server, count: int, timeout: float = 30.0) -> list[int]:
    """Until `count` workers announced they serve (each binds the port itself)."""
    def ready():
        pids = worker_pids(server)
        serving = [p for p in pids if f"worker pid {p} serving" in server.log()]
        return serving if len(serving) == count else None
    return wait_for(ready, timeout, what=f"{count} workers serving")


class WorkersServer(Server):
    """`serve --workers N` sharing one Redis database; start() returns once all N serve, with
    their pids in `pids`."""

    def __init__(self, workdir: Path, stream_dir: Path, redis_url: str, extra_config: str = "",
                 count: int = 2):
        super().__init__(workdir, stream_dir,
                         extra_config + f'[store]\nredis_url = "{redis_url}"\n')
        self.count = count
        self.pids: list[int] = []

    def start(self, *args: str) -> WorkersServer:
        super().start("--workers", str(self.count), *args)
        self.pids = wait_workers(self, self.count)
        return self


def serving_pid(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which process holds the server end of the loopback connection from `client_port`:
    the kernel's socket table gives its inode, the processes' fds name the inode."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port):
            inode = fields[9]
            break
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            for fd in fd_dir.iterdir():
                try:
                    if str(fd.readlink()) == wanted:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def one_per_worker(pids: list[int], connect: Callable[[], Any]) -> dict[int, Any]:
    """Open connections with `connect` (each has server_port, client_port and close()) until
    every worker serves one (the kernel hashes each new connection to a worker); extra ones
    are closed. Bounded: 60 tries."""
    found: dict[int, Any] = {}
    for _ in range(60):
        connection = connect()
        pid = serving_pid(connection.server_port, connection.client_port, pids)
        if pid is not None and pid not in found:
            found[pid] = connection
        else:
            connection.close()
        if len(found) == len(pids):
            return found
    for connection in found.values():
        connection.close()
    pytest.fail(f"60 connections reached only workers {sorted(found)} of {pids}")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class Pinned:
    """One keep-alive HTTP connection: every request on it reaches the same worker."""

    def __init__(self, port: int):
        self.server_port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        self.client_port = self.conn.sock.getsockname()[1]
        self.get("/api/clock")  # answered: a worker accepted it, so serving_pid can tell which

    def get(self, path: str, **headers: str) -> Reply:
        """The reply; fails if the worker closed the connection (a new one could reach the
        other worker)."""
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        reply = Reply(response.status, response.headers, response.read())
        assert self.conn.sock is not None, f"the worker closed the connection after {path}"
        return reply

    def close(self) -> None:
        self.conn.close()
