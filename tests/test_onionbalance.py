"""Beyond one machine in a private Tor network: one onion address over two backends with
Onionbalance, and an edge that follows an onion origin through Tor's SOCKS port.

Real parts: ../shared/tools/privnet.py (3 authorities, 4 relays, a client, an onion-service
tor), two `livestream serve` backends published as Onionbalance instances by `livestream onion
backend` through the onion-service tor's control port, `livestream onion balance` running
`onionbalance` (Debian package) for the front address, and curl fetching the front address
through the client's SOCKS port; for the edge, an origin
published as an onion service and `serve --origin http://….onion` pulling through the client.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import stem.control
from support import PROJECT, Server, cli, livestream, wait_for, write_config
from test_onion import private_tor_network

PRIVNET = Path(__file__).resolve().parents[2] / "shared" / "tools" / "privnet.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PRIVNET.exists(), reason=f"needs {PRIVNET} (the shared tools)"),
    pytest.mark.skipif(shutil.which("onionbalance") is None or shutil.which("curl") is None,
                       reason="needs onionbalance and curl (apt-get install onionbalance curl)"),
]


def fetch(socks_port: int, url: str, isolation: str, timeout: int = 30) -> str | None:
    """GET through tor; each `isolation` string is a fresh circuit (SOCKS username)."""
    done = subprocess.run(
        ["curl", "-s", "--max-time", str(timeout), "--socks5-hostname",
         f"{isolation}:x@127.0.0.1:{socks_port}", url],
        capture_output=True, text=True, check=False, timeout=timeout + 10)
    return done.stdout if done.returncode == 0 else None


def which_backend(page: str | None) -> str | None:
    for name in ("Backend-A", "Backend-B"):
        if page and name in page:
            return name
    return None


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    # --relay-dircache: every relay an HSDir, not only the 3 authorities. Onionbalance 0.2.2
    # (hashring.py) never finishes choosing the second replica's HSDirs when the first one
    # already took every HSDir of the ring (4 per replica), so it needs 5 or more.
    # 20 s votes: Onionbalance's testnet mode assumes chutney's 20 s voting interval when it
    # computes time periods and blinded keys; at privnet's default 10 s it signs and uploads
    # the front's descriptor for a time period clients never look up, so nobody finds it
    with private_tor_network(tmp_path_factory.mktemp("obnet"), "--vote-interval", "20",
                             "--initial-interval", "20", "--relay-dircache",
                             timeout=400) as state:
        yield state


def test_an_edge_follows_an_onion_origin_through_the_socks_port(network, live_stream, tmp_path):
    controller = stem.control.Controller.from_port(port=network["hs_control_port"])
    controller.authenticate()
    (tmp_path / "origin").mkdir()
    (tmp_path / "edge").mkdir()
    origin = Server(tmp_path / "origin", live_stream.directory).start()
    edge = Server(tmp_path / "edge", tmp_path / "edge" / "stream",
                  extra_config=f'[relay]\ntor_socks = "127.0.0.1:{network["socks_port"]}"\n'
                               'retry_max = 2.0\n')
    try:
        service = controller.create_ephemeral_hidden_service(
            {80: origin.port}, key_type="NEW", key_content="ED25519-V3", await_publication=True,
            timeout=120)
        onion = f"http://{service.service_id}.onion"
        edge.start("--origin", onion)
        wait_for(lambda: requests.get(edge.url + "/api/status", timeout=3).json()["status"]
                 == "live", 180, interval=2, what="the edge to go live through tor")
        # what the edge serves came from the origin, byte for byte
        playlist = requests.get(edge.url + "/stream/stream.m3u8", timeout=3).text
        newest = [line for line in playlist.splitlines() if line.endswith(".m4s")][-1]
        mine = requests.get(f"{edge.url}/stream/{newest}", timeout=3).content
        assert mine == (live_stream.directory / newest).read_bytes()
        assert service.service_id in edge.log(), "the edge names the origin it follows"
    finally:
        edge.stop()
        origin.stop()
        controller.close()


def hsdirs(controller: stem.control.Controller) -> int:
    return sum("HSDir" in status.flags for status in controller.get_network_statuses())


def job(config: Path, log: Path, *args: str) -> subprocess.Popen:
    """A long-running CLI command (until Ctrl-C), its output to `log`."""
    return subprocess.Popen(cli(config, *args), cwd=PROJECT, stdin=subprocess.DEVNULL,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def printed(log: Path, pattern: str, timeout: float = 60) -> str:
    return wait_for(lambda: (m := re.search(pattern, log.read_text(errors="replace")))
                    and m.group(1), timeout, interval=0.2, what=f"{pattern!r} in {log.name}")


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops the command; what it started must go with it."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    started = [int(pid) for pid in children.read_text().split()] if children.exists() else []
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)  # onionbalance gets 10 s to stop, then is killed
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise
    for pid in started:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10,
                 what=f"process {pid} started by {process.args[-1]} to end with it")


@pytest.fixture(scope="module")
def front(network, tmp_path_factory):
    """Two backends (own servers, distinct titles), each published by `livestream onion
    backend`, and the front run by `livestream onion balance`, as the README's steps go."""
    work = tmp_path_factory.mktemp("balance")
    controller = stem.control.Controller.from_port(port=network["hs_control_port"])
    controller.authenticate()
    try:
        wait_for(lambda: hsdirs(controller) >= 5, 120, interval=2, what="5 HSDirs")
    except TimeoutError:
        pytest.skip(f"the private network has {hsdirs(controller)} HSDirs; Onionbalance 0.2.2 "
                    "loops forever placing descriptors on a ring of 4 or fewer")
    # every command attaches to the onion-service tor (the client tor keeps no microdescriptor
    # consensus, which Onionbalance reads to place descriptors on the HSDir ring)
    tor = f'[tor]\nmode = "attach"\ncontrol_port = {network["hs_control_port"]}\n'
    front_config = write_config(work / "front", extra=tor)
    first = livestream(front_config, "onion", "balance")
    assert first.returncode == 0, first.stderr
    address = re.search(r"front address: (\S+)", first.stdout).group(1)
    servers, backend_jobs, backends = {}, {}, {}
    for name in ("Backend-A", "Backend-B"):
        (work / name).mkdir()
        servers[name] = Server(work / name, work / name / "stream",
                               extra_config=f'title = "{name}"\n' + tor).start()
        log = work / f"{name}.log"
        backend_jobs[name] = job(servers[name].config_path, log, "onion", "backend",
                                 "--front", address)
        backends[name] = printed(log, r"backend address: (\S+)")
    front_log = work / "onionbalance.log"
    process = job(front_config, front_log, "onion", "balance", "--testnet",
                  *[arg for b in backends.values() for arg in ("--backend", b)])
    assert printed(front_log, r"front address: http://(\S+?)/") == address
    yield {"address": address, "socks": network["socks_port"], "servers": servers,
           "log": front_log, "process": process, "backends": backends,
           "backend_jobs": backend_jobs}
    for running in (process, *backend_jobs.values()):
        interrupt(running)
    for server in servers.values():
        server.stop()
    controller.close()


def test_front_reaches_both_backends(front):
    url = f"http://{front['address']}/"
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    tries = 0
    while time.monotonic() < deadline and len(seen) < 2:
        tries += 1
        backend = which_backend(fetch(front["socks"], url, f"t{tries}"))
        if backend:
            seen.add(backend)
        else:
            time.sleep(1)
    log = front["log"].read_text(errors="replace")
    assert seen == {"Backend-A", "Backend-B"}, f"after {tries} tries saw {seen}\n{log[-3000:]}"


def test_front_still_serves_with_one_backend_killed(front):
    url = f"http://{front['address']}/"
    wait_for(lambda: which_backend(fetch(front["socks"], url, "before")), 180, interval=1,
             what="the front to answer")
    # backend B's machine goes away: its server and its onion service
    front["servers"]["Backend-B"].stop()
    interrupt(front["backend_jobs"]["Backend-B"])
    answers = []
    for attempt in range(6):
        answers.append(which_backend(fetch(front["socks"], url, f"after{attempt}", 60)))
    assert answers.count("Backend-A") >= 5, answers
    assert "Backend-B" not in answers
