"""One script inventing viewers: what it costs the server and the people really there.

A live test stream, a real `livestream serve` (one process, or --redis for `--workers 2`
sharing a redis-server), and three phases of --seconds each:

1. quiet: the viewer list (/chat/users) and the page (/) timed, nothing else going on;
2. segments: --threads keep-alive connections fetch (and HEAD) a segment, each request
   with a new made-up token, as fast as they can; the viewer list and the page are timed
   meanwhile, and the "N watching" it shows at the end is read;
3. forms: the same threads load the chat form with made-up tokens; meanwhile 5 newcomers
   each load the page and then the form up to 5 times, 2 s apart, and we count how many
   got a captcha.

    python bench/invented_viewers.py --seconds 10
    python bench/invented_viewers.py --seconds 10 --redis
    python bench/invented_viewers.py --seconds 10 --project ../older-checkout   # before

--project runs the server and stream.sh of another checkout (same .venv), to compare.
Loopback only; every loop ends with its phase.
"""
from __future__ import annotations

import argparse
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from redis_support import RedisServer  # noqa: E402
from support import free_port, wait_for  # noqa: E402


def start(project: Path, folder: Path, redis_url: str | None) -> tuple[subprocess.Popen, ...]:
    stream_dir = folder / "stream"
    stream = subprocess.Popen(
        [str(project / "stream.sh"), "--test"], cwd=project, start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "STREAM_DIR": str(stream_dir), "SEGMENT_SECONDS": "1",
             "VIDEO_SIZE": "320x180", "PRESET": "ultrafast", "LOGLEVEL": "error",
             "DURATION": "600"}, stdin=subprocess.DEVNULL)
    port = free_port()
    answers = folder / "answers.txt"
    config = folder / "config.toml"
    config.write_text(
        f'[server]\nport = {port}\nstate_dir = "{folder / "state"}"\n'
        f'[stream]\ndir = "{stream_dir}"\n'
        f'[captcha]\ntesting_answers_file = "{answers}"\n'
        + (f'[store]\nredis_url = "{redis_url}"\n' if redis_url else ""))
    args = ["--workers", "2"] if redis_url else []
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(config), "serve",
                               *args], cwd=project, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _live(url), 60, interval=0.5, what="the server to show the stream")
    return stream, server, url


def _live(url: str) -> bool:
    try:
        return b"<video" in requests.get(url + "/", timeout=2).content
    except requests.RequestException:
        return False


def timed(url: str) -> float:
    started = time.perf_counter()
    requests.get(url, timeout=30).raise_for_status()
    return (time.perf_counter() - started) * 1000


def measure_while(url: str, seconds: float) -> tuple[list[float], list[float]]:
    """Viewer-list and page times (ms) for `seconds`, a few a second."""
    lists, pages = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lists.append(timed(url + "/chat/users"))
        pages.append(timed(url + "/"))
        time.sleep(0.2)
    return lists, pages


def flood(url: str, seconds: float, threads: int, path_for) -> int:
    """`threads` keep-alive sessions asking for path_for(new token) until `seconds` pass."""
    done = [0] * threads
    deadline = time.monotonic() + seconds

    def run(slot: int) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            token = secrets.token_urlsafe(16)
            method, path = path_for(token, done[slot])
            try:
                session.request(method, url + path, timeout=10).close()
            except requests.RequestException:
                session = requests.Session()
            done[slot] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done)


def newcomers_with_captcha(url: str, count: int = 5) -> int:
    got = 0
    for _ in range(count):
        page = requests.get(url + "/", timeout=10).text
        token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
        for _ in range(5):
            form = requests.get(f"{url}/chat/form?token={token}", timeout=10).text
            if 'name="captcha_id"' in form:
                got += 1
                break
            time.sleep(2)
    return got


def watching(url: str) -> int:
    text = requests.get(url + "/chat/users", timeout=10).text
    return int(re.search(r'class="viewer-count">(\d+)<', text).group(1))


def summary(name: str, values: list[float]) -> str:
    return (f"{name} median {statistics.median(values):.1f} ms, "
            f"p95 {sorted(values)[int(len(values) * 0.95)]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis", action="store_true", help="--workers 2 with redis-server")
    parser.add_argument("--project", type=Path, default=HERE.parent)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis_server = RedisServer(folder / "redis").start() if args.redis else None
        stream, server, url = start(args.project.resolve(), folder,
                                    redis_server.url(0) if redis_server else None)
        try:
            lists, pages = measure_while(url, args.seconds)
            print(f"quiet: {summary('viewer list', lists)}; {summary('page', pages)}")
            playlist = requests.get(url + "/stream/stream.m3u8", timeout=5).text
            segment = re.findall(r"^(\S+\.m4s)", playlist, re.M)[-1]
            result: dict = {}
            sender = threading.Thread(target=lambda: result.setdefault("sent", flood(
                url, args.seconds, args.threads,
                lambda token, n: ("HEAD" if n % 2 else "GET",
                                  f"/stream/{segment}?token={token}"))))
            sender.start()
            lists, pages = measure_while(url, args.seconds)
            sender.join()
            time.sleep(2.5)  # the viewer count is published every 2 s
            print(f"segments with made-up tokens: {result['sent'] / args.seconds:.0f} "
                  f"requests/s; {summary('viewer list', lists)}; {summary('page', pages)}; "
                  f"then {watching(url)} shown watching")
            result.clear()
            sender = threading.Thread(target=lambda: result.setdefault("sent", flood(
                url, args.seconds + 12, args.threads,
                lambda token, n: ("GET", f"/chat/form?token={token}"))))
            sender.start()
            time.sleep(1)
            got = newcomers_with_captcha(url)
            sender.join()
            print(f"forms with made-up tokens: {result['sent'] / (args.seconds + 12):.0f} "
                  f"loads/s; newcomers who got a captcha within 5 reloads: {got} of 5")
        finally:
            server.terminate()
            server.wait(15)
            stream.terminate()
            stream.wait(15)
            if redis_server is not None:
                redis_server.stop()


if __name__ == "__main__":
    main()
