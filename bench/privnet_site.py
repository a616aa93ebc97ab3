"""Our server published in a private Tor network on this machine, for the benchmarks' figures
"through Tor" (the network: ../shared/tools/privnet.py, beside the checkout in CI).

    with onion_site(folder, config_lines) as site:   # privnet up, `serve` attached to it
        sock = site.connect("viewer-1")               # a SOCKS5 stream to the onion service
        site.proxy                                    # socks5://127.0.0.1:PORT, for a browser

Each SOCKS user name is its own circuit (tor isolates streams by SOCKS credentials), as
viewers on other machines would be. Loopback only; everything started is stopped again.
"""
from __future__ import annotations

import json
import random
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PRIVNET = PROJECT.parent / "shared" / "tools" / "privnet.py"


@dataclass
class OnionSite:
    address: str  # NAME.onion
    socks_port: int

    @property
    def proxy(self) -> str:
        return f"socks5://127.0.0.1:{self.socks_port}"

    def connect(self, who: str, timeout: float = 60) -> socket.socket:
        """A stream to the site's port 80 through tor, on the circuit of SOCKS user `who`."""
        sock = socket.create_connection(("127.0.0.1", self.socks_port), timeout=timeout)
        sock.sendall(b"\x05\x01\x02")  # SOCKS5, username/password only
        if sock.recv(2) != b"\x05\x02":
            raise OSError("the SOCKS port refused username authentication")
        user = who.encode()
        sock.sendall(b"\x01" + bytes([len(user)]) + user + b"\x01x")
        if sock.recv(2)[1:] != b"\x00":
            raise OSError("SOCKS authentication failed")
        host = self.address.encode()
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", 80))
        reply = sock.recv(10)
        if len(reply) < 2 or reply[1] != 0:
            raise OSError(f"SOCKS connect failed: {reply!r}")
        return sock


@contextmanager
def onion_site(work: Path, config_text: str, timeout: float = 240) -> Iterator[OnionSite]:
    """privnet up in `work`, then `serve` with `config_text` plus the attach-mode [tor]
    section, until the onion address answers through the network's SOCKS port."""
    if not PRIVNET.exists():
        raise SystemExit(f"no {PRIVNET.relative_to(PROJECT.parent)} beside the checkout")
    base = work / "privnet"
    try:
        for _ in range(3):
            up = subprocess.run([sys.executable, str(PRIVNET), "up", "--base", str(base),
                                 "--port-base", str(random.randrange(20000, 32000, 500))],
                                check=False, capture_output=True, text=True, timeout=timeout)
            if up.returncode == 0:
                break
        else:
            raise SystemExit(f"privnet up failed:\n{up.stdout}\n{up.stderr}")
        net = json.loads((base / "state.json").read_text())
        config = work / "config.toml"
        config.write_text(config_text + '\n[tor]\nenabled = true\nmode = "attach"\n'
                          f'control_port = {net["hs_control_port"]}\n[budgets]\nvideo = 64\n')
        log = (work / "serve.log").open("w+")
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(config),
                                   "serve"], cwd=PROJECT, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            address = _wait_address(work / "serve.log", server, timeout)
            site = OnionSite(address, net["socks_port"])
            _wait_reachable(site, timeout)
            yield site
        finally:
            server.terminate()
            server.wait(20)
    finally:
        subprocess.run([sys.executable, str(PRIVNET), "down", "--base", str(base)],
                       check=False, capture_output=True, timeout=60)


def _wait_address(log: Path, server: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        found = re.search(r"onion address reachable: http://([a-z2-7]{56}\.onion)",
                          log.read_text())
        if found:
            return found[1]
        time.sleep(0.5)
    raise SystemExit(f"the onion service was never reachable:\n{log.read_text()[-2000:]}")


def _wait_reachable(site: OnionSite, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with site.connect("probe", timeout=30) as sock:
                sock.sendall(b"GET /api/clock HTTP/1.0\r\nHost: x\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the onion address never answered through the SOCKS port")
        time.sleep(1)


@dataclass
class StreamSite:
    server_url: str  # the server on loopback: where a bench reads the live edge
    page_url: str  # where viewers go: the same, or http://NAME.onion
    proxy: str  # the browser's SOCKS proxy, "" on loopback


@contextmanager
def stream_site(work: Path, stream_dir: Path, privnet: bool) -> Iterator[StreamSite]:
    """`serve` for `stream_dir`, live: on loopback, or as an onion service of a private Tor
    network (the player benchmarks' --privnet). Needs tests/ on sys.path (support.py)."""
    import requests
    from support import Server, free_port, wait_for

    if not privnet:
        server = Server(work, stream_dir).start()
        try:
            server.wait_live()
            yield StreamSite(server.url, server.url, "")
        finally:
            server.stop()
        return
    port = free_port()
    config = (f'[server]\nport = {port}\nstate_dir = "{work / "state"}"\n'
              f'[stream]\ndir = "{stream_dir}"\n')
    with onion_site(work, config) as site:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(url + "/api/status", timeout=5).json()["online"],
                 60, 0.5, "the stream to go live")
        yield StreamSite(url, f"http://{site.address}", site.proxy)
