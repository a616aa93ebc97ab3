"""What renditions cost and what they buy.

    python bench/renditions.py encode --seconds 20
        CPU (% of one core) of stream.sh --test at 720p with no lower rendition and with the
        default low one (360p, 400 + 64 kbit/s), and of `livestream play` copying a 720p
        H.264/AAC file alone and with the low one encoded beside it.

    python bench/renditions.py serve --viewers 300 --seconds 15
        Server CPU with N /stream.mp4 viewers on the top rendition, then N on the low one:
        a low viewer must cost no more than a top one.

    python bench/renditions.py tor --viewers 20 --seconds 20
        Through a private Tor network (../shared/tools/privnet.py, its own --base folder and a
        random --port-base): N onion viewers per rendition, how many keep up, and the onion
        service's tor CPU per Mbit/s carried.

Loopback and private networks only; every loop is bounded by --seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT / "tests"))
from support import Server, wait_for  # noqa: E402

PRIVNET = PROJECT.parent / "shared" / "tools" / "privnet.py"
CACHE = HERE / ".cache"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ encoding cost

def stream_sh_cpu(seconds: int, renditions: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, STREAM_DIR=folder, VIDEO_SIZE="1280x720", FRAMERATE="30",
                   VIDEO_BITRATE="1500k", PRESET="veryfast", DURATION=str(seconds),
                   RENDITIONS=renditions, LOGLEVEL="error")
        before, started = children_cpu(), time.monotonic()
        subprocess.run([str(PROJECT / "stream.sh"), "--test"], env=env, check=True,
                       stdin=subprocess.DEVNULL, timeout=seconds * 4 + 30)
        return (children_cpu() - before) / (time.monotonic() - started) * 100


def clip(seconds: int) -> Path:
    """A 720p H.264/AAC file at about 1.5 Mbit/s, made once and cached."""
    path = CACHE / f"renditions-720p-{seconds}s.mp4"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30,noise=alls=8:allf=t", "-f", "lavfi",
                        "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
                        "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1500k", "-g", "60",
                        "-c:a", "aac", "-shortest", str(path)], check=True, timeout=600)
    return path


def play_cpu(movie: Path, lower: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.toml"
        text = f'[stream]\ndir = "{folder}/stream"\n'
        if not lower:
            text += '[[stream.renditions]]\nname = "source"\n'
        config.write_text(text)
        before, started = children_cpu(), time.monotonic()
        subprocess.run([sys.executable, "-m", "app.cli", "--config", str(config), "play",
                        str(movie)], cwd=PROJECT, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        return (children_cpu() - before) / (time.monotonic() - started) * 100


def encode(args) -> None:
    print(f"CPU, % of one core, {args.seconds} s each (this machine: {os.cpu_count()} cores)")
    top = stream_sh_cpu(args.seconds, "")
    both = stream_sh_cpu(args.seconds, "low:360:400:64")
    print(f"stream.sh --test 720p30 1.5 Mbit/s:          source only {top:5.1f}%   "
          f"+ low {both:5.1f}%   (the low rendition: {both - top:+.1f}%)")
    movie = clip(args.seconds)
    copy = play_cpu(movie, lower=False)
    copy_low = play_cpu(movie, lower=True)
    print(f"livestream play (720p H.264/AAC, copied): source only {copy:5.1f}%   "
          f"+ low {copy_low:5.1f}%   (the low rendition: {copy_low - copy:+.1f}%)")


# ------------------------------------------------------------------------ viewer cost

def hold_viewers(host: str, port: int, path: str, count: int, seconds: float) -> list[int]:
    """N raw HTTP/1.1 responses read with one epoll loop; bytes each received."""
    selector = selectors.DefaultSelector()
    received = {}
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(count):
        sock = socket.create_connection((host, port), timeout=10)
        sock.sendall(request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and selector.get_map():
        for key, _ in selector.select(timeout=0.5):
            try:
                data = key.fileobj.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                continue
            received[key.fileobj] += len(data)
    for sock in received:
        sock.close()
    return list(received.values())


def serve(args) -> None:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        env = dict(os.environ, STREAM_DIR=str(work / "stream"), VIDEO_SIZE="1280x720",
                   FRAMERATE="25", VIDEO_BITRATE="1300k", PRESET="ultrafast", LOGLEVEL="error",
                   RENDITIONS="low:360:400:64")
        source = subprocess.Popen([str(PROJECT / "stream.sh"), "--test"], env=env,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(work, work / "stream",  # the lines go on in its [stream] section
                        "max_connections_per_viewer = 100000\n"
                        "[viewers]\nmax_present = 100000\n").start()
        try:
            wait_for(lambda: (work / "stream" / "low.m3u8").exists(), 30, what="renditions")
            server.wait_live()
            time.sleep(4)
            print(f"{args.viewers} viewers for {args.seconds:.0f} s each, server CPU in % of "
                  "one core (stream.sh's two encoders run beside it)")
            for quality in ("source", "low"):
                before, started = cpu_seconds(server.process.pid), time.monotonic()
                got = hold_viewers("127.0.0.1", server.port, f"/stream.mp4?quality={quality}",
                                   args.viewers, args.seconds)
                cpu = (cpu_seconds(server.process.pid) - before) / (time.monotonic() - started)
                mbit = sum(got) * 8 / args.seconds / 1e6
                print(f"  {quality:6}: server CPU {cpu * 100:5.1f}%, {mbit:6.1f} Mbit/s out, "
                      f"{cpu * 100 / max(mbit, 1e-9):.2f}% per Mbit/s, "
                      f"{min(got) / 1e3:.0f}-{max(got) / 1e3:.0f} kB per viewer")
        finally:
            server.stop()
            os.killpg(source.pid, signal.SIGINT)
            source.wait(15)


# ------------------------------------------------------------------------ through Tor

def tor(args) -> None:
    if not PRIVNET.exists():
        sys.exit(f"{PRIVNET} is missing: the private Tor network tool lives in ../shared/tools")
    work = Path(tempfile.mkdtemp(prefix="renditions-tor-"))
    base = work / "privnet"
    port_base = random.randrange(20000, 32000)  # below the ephemeral ports (32768 on)
    privnet = [sys.executable, str(PRIVNET), "--base", str(base), "--port-base", str(port_base)]
    source = server = None
    try:
        up = subprocess.run(privnet + ["up"], timeout=300, capture_output=True, text=True,
                            check=False)
        if up.returncode:
            sys.exit(f"privnet.py up failed (run again: the port base is random):\n{up.stderr}")
        state = json.loads((base / "state.json").read_text())
        pids = json.loads((base / "pids.json").read_text())
        hs_pid = next(pid for name, pid in pids.items() if "hs" in name)
        env = dict(os.environ, STREAM_DIR=str(work / "stream"), VIDEO_SIZE="1280x720",
                   FRAMERATE="25", VIDEO_BITRATE="1300k", PRESET="ultrafast", LOGLEVEL="error",
                   RENDITIONS="low:360:400:64")
        source = subprocess.Popen([str(PROJECT / "stream.sh"), "--test"], env=env,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(work, work / "stream",  # the first line goes on in its [stream]
                        "max_connections_per_viewer = 100000\n"
                        f'[tor]\nenabled = true\nmode = "attach"\n'
                        f'control_port = {state["hs_control_port"]}\nephemeral = true\n'
                        "[viewers]\nmax_present = 100000\n").start()
        server.wait_live()
        onion = wait_for(lambda: _onion(server.log()), 90, 1, "the onion address")
        socks = f"127.0.0.1:{state['socks_port']}"
        wait_for(lambda: subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "20",
                                         "--socks5-hostname", socks, f"http://{onion}/"],
                                        check=False).returncode == 0, 120, 2, "the onion site")
        rates = {"source": 1300 + 96, "low": 400 + 64}
        print(f"{args.viewers} onion viewers per rendition for {args.seconds:.0f} s; the whole "
              f"Tor network (9 tor processes) shares this machine's {os.cpu_count()} cores")
        for quality, kbps in rates.items():
            before, started = cpu_seconds(hs_pid), time.monotonic()
            curls = [subprocess.Popen(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                                       "--max-time", str(args.seconds), "--socks5-hostname",
                                       socks, f"http://{onion}/stream.mp4?quality={quality}"],
                                      stdout=subprocess.PIPE, text=True)
                     for _ in range(args.viewers)]
            got = [int((c.communicate(timeout=args.seconds + 60)[0] or "0").strip() or 0)
                   for c in curls]
            elapsed = time.monotonic() - started
            tor_cpu = (cpu_seconds(hs_pid) - before) / elapsed
            mbit = sum(got) * 8 / elapsed / 1e6
            # Keeping up: at least 80% of the rendition's rate over the window (the first
            # seconds include the circuit and the init segment).
            keeping = sum(1 for g in got if g * 8 / 1000 >= 0.8 * kbps * (args.seconds - 3))
            print(f"  {quality:6}: {keeping}/{args.viewers} keep up, {mbit:5.1f} Mbit/s through "
                  f"the onion service, its tor at {tor_cpu * 100:4.1f}% of a core "
                  f"({tor_cpu * 100 / max(mbit, 1e-9):.2f}% per Mbit/s)")
    finally:
        if server is not None:
            server.stop()
        if source is not None:
            os.killpg(source.pid, signal.SIGINT)
            source.wait(15)
        subprocess.run(privnet + ["down"], check=False, timeout=120, stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


def _onion(log: str) -> str | None:
    for word in log.replace("/", " ").split():
        if word.endswith(".onion") and len(word) > 60:
            return word
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["encode", "serve", "tor"])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--viewers", type=int, default=100)
    args = parser.parse_args()
    if args.what == "encode":
        args.seconds = int(args.seconds)
        encode(args)
    elif args.what == "serve":
        serve(args)
    else:
        tor(args)


if __name__ == "__main__":
    main()
