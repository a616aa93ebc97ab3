"""Does the droplet's software fit in 512 MiB? Its services, run here under a memory limit.

What the droplet runs, started inside one memory cgroup limited to --limit-mib: `livestream
serve` (with its own tor publishing the onion service, DisableNetwork=1 so nothing leaves
this machine) and `livestream ingest`. Outside the limit, as on the evening: an ffmpeg
publisher pushing a 720p clip over RTMP (the owner's machine) and --viewers viewers holding
/stream.mp4 open (the audience). Two runs: the publisher sends H.264/AAC (the ingest copies
it) and Sorenson H.263/MP3 (the ingest transcodes with libx264, its heaviest case).

Reported per run: the cgroup's peak charge (anonymous memory plus page cache, which the
kernel reclaims under pressure), the peak anonymous memory (what cannot be reclaimed
without swap), the peak summed RSS of the services, OOM kills, and whether every viewer
still receives video at the end.

    sudo .venv/bin/python bench/droplet_memory.py --viewers 50 --seconds 40

Needs a writable memory cgroup: cgroup v2 (memory.max, memory.peak) or v1
(memory.limit_in_bytes, memory.max_usage_in_bytes). Loopback only; every loop is bounded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(HERE))
from stream_viewers import make_clip  # noqa: E402
from support import free_port, wait_for  # noqa: E402

MIB = 2**20


class Cgroup:
    """One memory cgroup made for this run, v2 or v1, removed afterwards."""

    def __init__(self, limit_bytes: int):
        self.path, self.v2 = self._make()
        if self.v2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            (self.path / "memory.swap.max").write_text("0") if (
                self.path / "memory.swap.max").exists() else None
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))

    @staticmethod
    def _make() -> tuple[Path, bool]:
        name = f"livestream-bench-{os.getpid()}"
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, where = line.split(":", 2)
            if number == "0" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
                base = Path("/sys/fs/cgroup") / where.lstrip("/")
                if "memory" in (base / "cgroup.controllers").read_text().split():
                    path = base / name
                    path.mkdir()
                    return path, True
            if "memory" in controllers.split(","):
                base = Path("/sys/fs/cgroup/memory") / where.lstrip("/")
                path = base / name
                path.mkdir()
                return path, False
        raise SystemExit("no writable memory cgroup here (try systemd-run -p MemoryMax=512M)")

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run inside this cgroup (the shell moves itself in, then execs)."""
        return ["sh", "-c", f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"', "sh", *argv]

    def read(self, name: str) -> int:
        try:
            return int((self.path / name).read_text().split()[0])
        except (OSError, ValueError):
            return -1

    def stat(self) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in
                                       (self.path / "memory.stat").read_text().splitlines())}

    def anon(self) -> int:
        stat = self.stat()
        return stat.get("anon", stat.get("total_rss", stat.get("rss", 0)))

    def peak(self) -> int:
        return self.read("memory.peak" if self.v2 else "memory.max_usage_in_bytes")

    def oom_kills(self) -> int:
        if self.v2:
            events = dict(line.split() for line in
                          (self.path / "memory.events").read_text().splitlines())
            return int(events.get("oom_kill", 0))
        control = dict(line.split() for line in
                       (self.path / "memory.oom_control").read_text().splitlines())
        return int(control.get("oom_kill", 0))

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        for _ in range(50):
            if not self.pids():
                break
            time.sleep(0.1)
        self.path.rmdir()


def rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def names(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return ", ".join(sorted(set(out)))


def viewer(url: str, stop: threading.Event, got: list[float], index: int) -> None:
    """One viewer: the page, then /stream.mp4 read until the end (bounded by stop)."""
    session = requests.Session()
    try:
        session.get(url + "/", timeout=10)
        with session.get(url + "/stream.mp4", stream=True, timeout=30) as answer:
            for chunk in answer.iter_content(65536):
                if chunk:
                    got[index] = time.monotonic()
                if stop.is_set():
                    return
    except requests.RequestException:
        return


def run(clip: Path, transcode: bool, count: int, seconds: float, limit_bytes: int,
        system_tor: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="droplet-memory-"))
    web_port, rtmp_port = free_port(), free_port()
    stream, state = work / "stream", work / "state"
    state.mkdir()
    key = "benchKey_" + os.urandom(9).hex()
    (state / "ingest.key").write_text(key + "\n")
    config = work / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {web_port}\nstate_dir = "{state}"\n'
        f'[stream]\ndir = "{stream}"\n'
        f'[ingest]\nport = {rtmp_port}\nhost = "127.0.0.1"\n'
        '[tor]\nmode = "launch"\ntorrc = { DisableNetwork = 1 }\n')
    group = Cgroup(limit_bytes)
    log = (work / "services.log").open("ab")
    cli = [sys.executable, "-m", "app.cli", "--config", str(config)]
    services = [subprocess.Popen(group.wrap(cli + args), cwd=PROJECT, stdout=log, stderr=log,
                                 stdin=subprocess.DEVNULL)
                for args in (["serve", "--onion", "--clearnet"], ["ingest"])]
    if system_tor:  # what Debian's tor package would run besides ours, offline here
        (work / "system-tor").mkdir(mode=0o700)
        services.append(subprocess.Popen(group.wrap(
            ["tor", "--quiet", "--DisableNetwork", "1", "--SocksPort", "auto",
             "--DataDirectory", str(work / "system-tor")]), stdout=log, stderr=log,
            stdin=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{web_port}"
    peak_rss = peak_anon = 0
    stop = threading.Event()
    got = [0.0] * count
    publisher = None
    receiving = None
    try:
        wait_for(lambda: _answers(url), 60, what="the server")
        codecs = (["-c:v", "flv1", "-q:v", "4", "-c:a", "libmp3lame", "-b:a", "128k",
                   "-ar", "44100"]
                  if transcode else ["-c", "copy"])
        publisher = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(clip), *codecs,
             "-t", str(seconds + 30), "-f", "flv",
             f"rtmp://127.0.0.1:{rtmp_port}/live/{key}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: any(stream.glob("*.m4s")), 60, what="the first segment")
        threads = [threading.Thread(target=viewer, args=(url, stop, got, i), daemon=True)
                   for i in range(count)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            pids = group.pids()
            peak_rss = max(peak_rss, rss(pids))
            peak_anon = max(peak_anon, group.anon())
            time.sleep(0.5)
        now = time.monotonic()
        receiving = sum(1 for t in got if now - t < 10)
        alive = [s.poll() is None for s in services]
        processes = names(group.pids())
    finally:
        stop.set()
        if publisher:
            publisher.terminate()
            publisher.wait(10)
        for service in services:
            service.terminate()
        for service in services:
            try:
                service.wait(15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(5)
        log.close()
        if receiving is None:
            group.remove()
    result = {
        "mode": ("transcode (libx264)" if transcode else "copy (H.264/AAC in)")
        + (" + system tor" if system_tor else ""),
        "peak_charge_mib": group.peak() / MIB, "peak_anon_mib": peak_anon / MIB,
        "peak_rss_mib": peak_rss / MIB, "oom_kills": group.oom_kills(),
        "viewers_receiving": receiving, "viewers": count, "services_alive": all(alive),
        "processes": processes,
    }
    group.remove()
    shutil.rmtree(work, ignore_errors=True)
    return result


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--limit-mib", type=int, default=512)
    parser.add_argument("--mode", choices=["copy", "transcode", "both"], default="both")
    parser.add_argument("--system-tor", action="store_true",
                        help="also run a second tor, as the tor package's own service would")
    args = parser.parse_args()
    clip = make_clip(30)
    modes = {"copy": [False], "transcode": [True], "both": [False, True]}[args.mode]
    print(f"limit {args.limit_mib} MiB, {args.viewers} viewers, {args.seconds:g} s per run")
    for transcode in modes:
        r = run(clip, transcode, args.viewers, args.seconds, args.limit_mib * MIB,
                args.system_tor)
        print(f"{r['mode']:<34} peak charge {r['peak_charge_mib']:6.1f} MiB  "
              f"peak anon {r['peak_anon_mib']:6.1f} MiB  peak RSS {r['peak_rss_mib']:6.1f} MiB  "
              f"OOM kills {r['oom_kills']}  viewers receiving {r['viewers_receiving']}/"
              f"{r['viewers']}  services alive {r['services_alive']}  ({r['processes']})",
              flush=True)


if __name__ == "__main__":
    main()
