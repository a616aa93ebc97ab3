"""A slow circuit for tests and benchmarks: two network namespaces joined by a veth pair, the
server side's egress shaped to a rate with tc's tbf, and a relay in the viewer's namespace that
holds every chunk back by a one-way delay in each direction (this kernel has no netem).

Everything stays inside the two namespaces created here (addresses from 10.213.0.0/16 on
both ends of the pair, nothing routed out); `close()` deletes them. Needs root and iproute2.

Run as a script, it is the relay: `python slow_link.py LISTEN_PORT TARGET_HOST TARGET_PORT
DELAY_SECONDS` (inside the viewer's namespace).
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> str | None:
    """None when slow links can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "iproute2 (ip, tc) is not installed"
    return None


class SlowLink:
    """viewer namespace --(relay: +delay each way)--> veth --(tbf: rate)--> server namespace."""

    def __init__(self, rate_kbit: int = 1000, rtt_ms: int = 300):
        tag = f"{os.getpid() % 10000}{random.randrange(100, 999)}"
        self.server_ns, self.viewer_ns = f"lss{tag}", f"lsv{tag}"
        subnet = random.randrange(0, 63) * 4
        octet = random.randrange(1, 250)
        self.server_ip = f"10.213.{octet}.{subnet + 1}"
        self.viewer_ip = f"10.213.{octet}.{subnet + 2}"
        self.rate_kbit, self.rtt_ms = rate_kbit, rtt_ms
        self.relays: list[subprocess.Popen] = []
        server_dev, viewer_dev = f"vs{tag}", f"vv{tag}"
        self.server_dev = server_dev
        try:
            for ns in (self.server_ns, self.viewer_ns):
                run("ip", "netns", "add", ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "link", "add", server_dev, "type", "veth", "peer", "name", viewer_dev)
            run("ip", "link", "set", server_dev, "netns", self.server_ns)
            run("ip", "link", "set", viewer_dev, "netns", self.viewer_ns)
            for ns, ip, dev in ((self.server_ns, self.server_ip, server_dev),
                                (self.viewer_ns, self.viewer_ip, viewer_dev)):
                run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            run("ip", "-n", self.server_ns, "link", "set", server_dev, "up")
            run("ip", "-n", self.viewer_ns, "link", "set", viewer_dev, "up")
            self._shape("add", rate_kbit)
        except BaseException:
            self.close()
            raise

    def set_rate(self, rate_kbit: int) -> None:
        """The circuit widens or narrows, connections kept."""
        self._shape("change", rate_kbit)
        self.rate_kbit = rate_kbit

    def _shape(self, how: str, rate_kbit: int) -> None:
        # Downstream (server -> viewer) at the circuit's rate; a queue of about a second.
        burst = max(4, rate_kbit // 64)
        run("ip", "netns", "exec", self.server_ns, "tc", "qdisc", how, "dev", self.server_dev,
            "root", "tbf", "rate", f"{rate_kbit}kbit", "burst", f"{burst}kb", "latency", "1000ms")

    def in_server(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *argv]

    def in_viewer(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.viewer_ns, *argv]

    def relay(self, listen_port: int, target_port: int) -> str:
        """A delaying relay in the viewer's namespace; returns the URL base viewers open."""
        proc = subprocess.Popen(self.in_viewer(sys.executable, str(HERE / "slow_link.py"),
                                               str(listen_port), self.server_ip,
                                               str(target_port), str(self.rtt_ms / 2000)),
                                stdin=subprocess.DEVNULL)
        self.relays.append(proc)
        return f"http://127.0.0.1:{listen_port}"

    def close(self) -> None:
        for proc in self.relays:
            proc.kill()
            proc.wait(5)
        for ns in (self.server_ns, self.viewer_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


# --------------------------------------------------------------------------- the relay

async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    """Copy chunks, each released `delay` seconds after it arrived (order kept)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=4096)
    loop = asyncio.get_running_loop()

    async def release() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(release())
    try:
        while data := await reader.read(65536):
            await queue.put((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    await queue.put((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def _serve(listen_port: int, host: str, port: int, delay: float) -> None:
    async def handle(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, target_host, target_port, one_way = sys.argv[1:5]
    asyncio.run(_serve(int(listen), target_host, int(target_port), float(one_way)))
