"""The one-shot cloud receiver under a slow-drip client, over a real socket (issue 12, item 9).

The receiver serves one connection at a time on the droplet's public port. With only a
per-read timeout, a client that sends a byte every 1.5 s held it for ever and made the deploy
time out; each connection now has a total deadline.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import requests
from support import free_port, wait_for

from app.config import PROJECT_DIR

DEADLINE = 3.0


def test_a_dripping_client_cannot_hold_the_receiver(tmp_path):
    key_file = tmp_path / "deploy.key"
    key_file.write_text(bytes(range(32)).hex() + "\n")
    port = free_port()
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(PROJECT_DIR / "app" / "cloud" / "receiver.py"),
         "--key-file", str(key_file), "--dest", str(tmp_path / "opt" / "src"),
         "--host", "127.0.0.1", "--port", str(port), "--timeout", "60",
         "--connection-seconds", str(DEADLINE)], stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}/challenge"

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "receiver.log").read_text()
            try:
                return requests.get(url, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(listening, 10, what="the receiver to listen")
        drip = socket.create_connection(("127.0.0.1", port))
        drip.settimeout(1.0)
        started = time.monotonic()
        closed_after = None
        request = b"POST /bundle HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50
        for byte in request:  # a byte every 1.5 s, inside the per-read timeout every time
            try:
                drip.sendall(bytes([byte]))
                answer = drip.recv(1024)
            except socket.timeout:
                answer = None
            except OSError:
                answer = b""
            if answer is not None:  # answered (refused) or closed: the drip lost its hold
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > DEADLINE + 10:
                break
            time.sleep(0.5)
        drip.close()
        print(f"\ndripping client cut after {closed_after} s (deadline {DEADLINE} s)")
        assert closed_after is not None, "a client dripping a byte every 1.5 s held the port"
        assert closed_after < DEADLINE + 2
        # and the port answers the real deployer again
        assert requests.get(url, timeout=5).status_code == 200
        assert "after 3 s" in (tmp_path / "receiver.log").read_text()
    finally:
        process.kill()
        process.wait()
        log.close()


def test_idle_connections_do_not_hold_the_receiver(tmp_path):
    """Finding 9 of the second review: three idle connections (20 s each, one at a time)
    held the receiver longer than the uploader waits (10 s)."""
    key_file = tmp_path / "deploy.key"
    key_file.write_text(bytes(range(32)).hex() + "\n")
    port = free_port()
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(PROJECT_DIR / "app" / "cloud" / "receiver.py"),
         "--key-file", str(key_file), "--dest", str(tmp_path / "opt" / "src"),
         "--host", "127.0.0.1", "--port", str(port), "--timeout", "60"], stdout=log, stderr=log)
    idle: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}/challenge"
        wait_for(lambda: _answers(url), 10, what="the receiver to listen")
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.3)
        started = time.monotonic()
        assert requests.get(url, timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0
        # one address cannot take every connection: beyond 4 open, more are closed at once
        more = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        idle += more
        closed = 0
        for sock in idle:
            sock.settimeout(1.5)
            try:
                closed += sock.recv(1) == b""
            except socket.timeout:
                pass
        assert closed >= 2, f"{len(idle)} idle connections from one address, {closed} closed"
    finally:
        for sock in idle:
            sock.close()
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
