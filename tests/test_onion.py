"""The onion service, against real tor processes running offline (DisableNetwork 1).

Most tests start the real server (`python -m app.cli serve`) and read what it prints; one tor
launched here is shared by the attach-mode tests. The slow test at the end publishes the site
in a private Tor network on loopback and watches video arrive through it.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import stem
import stem.control
import stem.process
from chat_support import field
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, livestream, make_app, wait_for, write_config

from app.onion import keys as onion_keys

REPO = Path(__file__).resolve().parents[1]
PRIVNET = Path(__file__).resolve().parents[2] / "shared" / "tools" / "privnet.py"
PASSWORD = "correct horse battery staple"
ADDRESS_LINE = re.compile(r"onion address: http://([a-z2-7]{56}\.onion)/")

pytestmark = pytest.mark.skipif(shutil.which("tor") is None,
                                reason="needs tor: sudo apt-get install tor")


def onion_config(folder: Path, port: int, tor: dict, server: dict | None = None,
                 stream_dir: Path | None = None) -> Path:
    """A config with the onion service on (tor offline unless told otherwise)."""
    tor = {"enabled": True, "torrc": {"DisableNetwork": 1}, **tor}
    return write_config(folder, {"server": {"port": port, **(server or {})},
                                 "stream": {"dir": str(stream_dir or folder / "stream")},
                                 "tor": tor})


class Serve:
    """A real `livestream serve` process; its output is kept in files to read from."""

    def __init__(self, config: Path, *args: str, env: dict | None = None):
        self.config = config
        self.out = config.parent / f"out-{time.monotonic_ns()}.txt"
        self.err = self.out.with_suffix(".err")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "--config", str(config), "serve", *args],
                cwd=REPO, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=env or dict(os.environ))

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, pattern: str, where: str = "stdout", timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, getattr(self, where))
            if match:
                return match
            if self.process.poll() is not None:
                match = re.search(pattern, getattr(self, where))
                if match:
                    return match
                raise AssertionError(f"server exited ({self.process.returncode}) before "
                                     f"{pattern!r}:\n{self.stdout}\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.stdout}\n{self.stderr}")

    def address(self) -> str:
        return self.wait_for(ADDRESS_LINE.pattern).group(1)

    def tor_pid(self) -> int:
        return int(self.wait_for(r"tor started \(pid (\d+)\)", "stderr").group(1))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise AssertionError("server did not stop within 15 s of SIGTERM") from None

    def finish(self, timeout: float = 20) -> int:
        """Wait for a server that is expected to exit by itself."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise AssertionError(f"server still running after {timeout} s:\n{self.stderr}") \
                from None


@contextmanager
def serving(config: Path, *args: str, env: dict | None = None):
    server = Serve(config, *args, env=env)
    try:
        yield server
    finally:
        server.stop()


def process_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on this port, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def published_by(controller: stem.control.Controller, key: onion_keys.OnionKey) -> bool:
    """True when this tor already serves the key (adding it again collides)."""
    try:
        response = controller.create_ephemeral_hidden_service(
            {80: 9}, key_type="ED25519-V3", key_content=key.blob)
    except stem.ProtocolError as exc:
        assert "collision" in str(exc).lower(), exc
        return True
    controller.remove_ephemeral_hidden_service(response.service_id)
    return False


def address_tor_gives(controller: stem.control.Controller, key: onion_keys.OnionKey) -> str:
    response = controller.create_ephemeral_hidden_service(
        {80: 9}, key_type="ED25519-V3", key_content=key.blob)
    controller.remove_ephemeral_hidden_service(response.service_id)
    return response.service_id + ".onion"


def launch_test_tor(folder: Path, auth: dict) -> tuple[int, subprocess.Popen]:
    port = free_port()
    process = stem.process.launch_tor_with_config(
        config={"DataDirectory": str(folder / "data"), "ControlPort": str(port),
                "SocksPort": "0", "DisableNetwork": "1", **auth},
        completion_percent=0, take_ownership=True, timeout=60)
    return port, process


@pytest.fixture(scope="module")
def password_tor(tmp_path_factory):
    """One offline tor for the whole module, with password authentication only."""
    folder = tmp_path_factory.mktemp("shared-tor")
    hashed = subprocess.run(["tor", "--quiet", "--hash-password", PASSWORD], check=True,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    yield from controlled_test_tor(folder, {"HashedControlPassword": hashed}, PASSWORD)


@pytest.fixture(scope="module")
def cookie_tor(tmp_path_factory):
    """A second offline tor that takes cookie authentication (as Debian's system tor does)."""
    yield from controlled_test_tor(tmp_path_factory.mktemp("cookie-tor"),
                                   {"CookieAuthentication": "1"})


def controlled_test_tor(folder: Path, auth: dict, password: str | None = None):
    """Launch an offline tor, yield (control port, authenticated controller), then stop it."""
    port, process = launch_test_tor(folder, auth)
    controller = stem.control.Controller.from_port(port=port)
    controller.authenticate(password=password)
    try:
        yield port, controller
    finally:
        controller.close()
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory):
    """One run in launch mode, asked to listen on 0.0.0.0: what it printed, made and did."""
    folder = tmp_path_factory.mktemp("launch")
    port = free_port()
    config = onion_config(folder, port, {"mode": "launch"}, {"host": "0.0.0.0"})
    with serving(config) as server:
        address = server.address()
        tor_pid = server.tor_pid()
        listening = listening_addresses(port)
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
    return {"folder": folder, "config": config, "address": address, "tor_pid": tor_pid,
            "listening": listening, "exit_code": server.process.returncode, "page": page}


def test_printed_address_matches_the_persisted_key(first_launch, password_tor):
    key_file = first_launch["folder"] / "state" / "onion" / "private_key"
    key = onion_keys.read_key(key_file)
    assert key is not None
    # an independent tor, given only the key file's content, computes the same address
    assert address_tor_gives(password_tor[1], key) == first_launch["address"]
    address_file = first_launch["folder"] / "state" / "onion" / "hostname"
    assert address_file.read_text().strip() == first_launch["address"]


def test_key_file_is_readable_by_its_owner_only(first_launch):
    key_file = first_launch["folder"] / "state" / "onion" / "private_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert not list(key_file.parent.glob(".*.tmp"))


def test_onion_mode_listens_on_loopback_only(first_launch):
    assert first_launch["page"].status_code == 200
    assert first_launch["listening"] == {"0100007F"}, first_launch["listening"]


def test_clean_shutdown_stops_the_launched_tor(first_launch):
    assert first_launch["exit_code"] == 0
    assert process_gone(first_launch["tor_pid"]), "the launched tor outlived the server"


def test_restart_gives_the_same_address(first_launch):
    with serving(first_launch["config"]) as server:
        assert server.address() == first_launch["address"]
    assert server.process.returncode == 0


def test_an_address_tor_cannot_publish_is_not_called_reachable(tmp_path):
    """With no network, tor never publishes the descriptor: past the limit the server says
    the address is not reachable, and why."""
    config = onion_config(tmp_path, free_port(), {"reachable_timeout": 2})
    with serving(config) as server:
        server.address()
        said = server.wait_for(r"NOT reachable after 2 s: (.*)", timeout=30).group(1)
        assert "DisableNetwork" in said and "Do not hand the address out" in said
        assert "onion address reachable" not in server.stdout


def test_metrics_show_the_onion_services_tor_traffic(tmp_path):
    port = free_port()
    config = write_config(tmp_path, {"server": {"port": port},
                                     "broadcaster": {"password": "metrics-pass"},
                                     "tor": {"enabled": True, "torrc": {"DisableNetwork": 1}}})
    with serving(config) as server:
        server.address()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                            auth=("broadcaster", "metrics-pass")).text
        read = re.search(r"^livestream_tor_read_bytes ([\d.e+]+)$", text, re.M)
        assert read and re.search(r"^livestream_tor_written_bytes ", text, re.M), text[-500:]


def test_clearnet_must_be_asked_for(tmp_path):
    port = free_port()
    config = onion_config(tmp_path, port, {"mode": "launch"}, {"host": "0.0.0.0"})
    with serving(config, "--clearnet") as server:
        server.address()
        assert listening_addresses(port) == {"00000000"}


@pytest.mark.parametrize("auth", ["password", "cookie"])
def test_attach_mode_publishes_in_the_running_tor_and_removes_on_exit(
        tmp_path, request, auth):
    control_port, controller = request.getfixturevalue(f"{auth}_tor")
    password = PASSWORD if auth == "password" else ""
    config = onion_config(tmp_path, free_port(), {
        "mode": "attach", "control_port": control_port, "password": password},
        {"log_level": "debug"})
    with serving(config) as server:
        address = server.address()
        key = onion_keys.read_key(tmp_path / "state" / "onion" / "private_key")
        assert key.address == address
        assert published_by(controller, key)
        assert "tor started" not in server.stderr  # attached: nothing launched
    assert server.process.returncode == 0
    assert not published_by(controller, key), "the service outlived the server"
    for secret in (PASSWORD, key.blob):  # not even at log level debug
        assert secret not in server.stdout + server.stderr


def test_wrong_password_is_a_clear_error(tmp_path, password_tor):
    config = onion_config(tmp_path, free_port(), {
        "mode": "attach", "control_port": password_tor[0], "password": "not the password"})
    server = Serve(config)
    assert server.finish() == 1
    assert "authentication with tor's control port" in server.stderr
    assert "wrong control password" in server.stderr
    assert "not the password" not in server.stderr + server.stdout
    assert "Traceback" not in server.stderr


def test_refused_control_port_is_a_clear_error(tmp_path):
    dead_port = free_port()
    config = onion_config(tmp_path, free_port(), {"mode": "attach", "control_port": dead_port})
    server = Serve(config)
    assert server.finish() == 1
    assert f"cannot connect to tor's control port 127.0.0.1:{dead_port}" in server.stderr
    assert "Connection refused" in server.stderr
    assert "Traceback" not in server.stderr


def test_missing_tor_says_how_to_install_it(tmp_path):
    config = onion_config(tmp_path, free_port(), {"mode": "launch"})
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    server = Serve(config, env=dict(os.environ, PATH=str(empty_path)))
    assert server.finish() == 1
    assert "tor is not installed" in server.stderr
    assert "apt-get install tor" in server.stderr


@pytest.mark.parametrize("content, message", [
    (b"ED25519-V3:bm90IGEga2V5\n", "is malformed"),
    (b"hello\n", "not an onion key"),
    (None, "cannot read the onion key"),
], ids=["malformed", "not-a-key", "unreadable"])
def test_bad_key_file_is_a_clear_error(tmp_path, content, message):
    key_file = tmp_path / "key"
    if content is None:
        key_file.mkdir()  # a directory: unreadable as a file, even for root
    else:
        key_file.write_bytes(content)
        key_file.chmod(0o600)
    config = onion_config(tmp_path, free_port(), {"mode": "launch", "key_file": str(key_file)})
    server = Serve(config)
    assert server.finish() == 1
    assert message in server.stderr
    assert str(key_file) in server.stderr
    assert "Traceback" not in server.stderr
    assert not (tmp_path / "state" / "tor").exists(), "tor launched despite a bad key"


def test_tor_hs_secret_key_file_is_accepted_and_loose_permissions_fixed(tmp_path, caplog):
    key = onion_keys.new_key()
    path = tmp_path / "hs_ed25519_secret_key"
    path.write_bytes(onion_keys.TOR_SECRET_HEADER + key.secret)
    path.chmod(0o644)
    assert onion_keys.read_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_throwaway_address_is_new_each_run_and_never_stored(tmp_path):
    config = onion_config(tmp_path, free_port(), {"mode": "launch", "ephemeral": True})
    addresses = []
    for _ in range(2):
        with serving(config) as server:
            addresses.append(server.address())
            hostname = tmp_path / "state" / "onion" / "hostname"
            assert hostname.read_text().strip() == addresses[-1]
        assert not hostname.exists(), "a throwaway address was left on disk"
    assert addresses[0] != addresses[1]
    assert not (tmp_path / "state" / "onion" / "private_key").exists()


def test_client_authorization(tmp_path, password_tor):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    config = onion_config(tmp_path, free_port(), {
        "mode": "attach", "control_port": password_tor[0], "password": PASSWORD,
        "client_auth": True})
    refused = Serve(config)
    assert refused.finish() == 1
    assert "add-client" in refused.stderr

    added = livestream(config, "onion", "add-client", "alice")
    assert added.returncode == 0, added.stderr
    address = livestream(config, "onion", "address").stdout.strip()
    line = re.search(rf"{address[:-6]}:descriptor:x25519:([A-Z2-7]{{52}})", added.stdout)
    assert line, added.stdout
    stored = tmp_path / "state" / "onion" / "authorized_clients" / "alice.auth"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    public = re.fullmatch(r"descriptor:x25519:([A-Z2-7]{52})", stored.read_text().strip())
    private = X25519PrivateKey.from_private_bytes(onion_keys.b32decode(line.group(1)))
    derived = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert onion_keys.b32decode(public.group(1)) == derived  # the pair belongs together
    assert line.group(1) not in stored.read_text()  # the private half is not kept

    with serving(config) as server:
        assert server.address() == address
        assert "client authorization is on" in server.stdout
    assert "alice" in livestream(config, "onion", "clients").stdout
    assert livestream(config, "onion", "remove-client", "alice").returncode == 0
    assert not stored.exists()


def test_watchdog_restarts_a_killed_tor_with_the_same_address(tmp_path):
    port = free_port()
    config = onion_config(tmp_path, port, {"mode": "launch", "check_interval": 0.2})
    with serving(config) as server:
        address = server.address()
        first_pid = server.tor_pid()
        os.kill(first_pid, signal.SIGKILL)
        server.wait_for(r"tor is back; the onion service is at (\S+) again", "stderr")
        pids = re.findall(r"tor started \(pid (\d+)\)", server.stderr)
        assert len(pids) == 2 and int(pids[1]) != first_pid
        assert f"at {address} again" in server.stderr
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    assert process_gone(int(pids[1]))


def test_watchdog_exits_clearly_when_tor_cannot_come_back(tmp_path):
    config = onion_config(tmp_path, free_port(), {
        "mode": "launch", "check_interval": 0.2, "restart_attempts": 0})
    server = Serve(config)
    try:
        server.address()
        os.kill(server.tor_pid(), signal.SIGKILL)
        assert server.finish(timeout=15) == 1
    finally:
        server.stop()
    assert "tor is gone" in server.stderr and "the server stops" in server.stderr


# --- hardening for anonymous viewers ------------------------------------------------------------

ROUNDED_DATE = re.compile(r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:00 GMT$")


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """The server without tor: the hardening applies whether or not onion mode is on."""
    folder = tmp_path_factory.mktemp("plain")
    port = free_port()
    config = onion_config(folder, port, {"enabled": False})
    with serving(config) as server:
        server.wait_for(r"watch at http://", "stderr")
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("path", ["/", "/info", "/static/style.css", "/no-such-page"])
def test_no_server_header_and_date_only_to_the_minute(plain_server, path):
    response = requests.get(plain_server + path, timeout=10)
    assert "Server" not in response.headers
    assert ROUNDED_DATE.match(response.headers["Date"]), response.headers["Date"]
    assert "gevent" not in str(response.headers).lower()
    assert "Last-Modified" not in response.headers and "ETag" not in response.headers


def test_malformed_request_gets_a_bare_answer(plain_server):
    port = int(plain_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = sock.recv(65536).decode("latin-1")
    head = answer.split("\r\n\r\n", 1)[0]
    assert head.startswith("HTTP/1.1 400")
    assert "server:" not in head.lower()
    assert "traceback" not in answer.lower()
    date = re.search(r"^Date: (.+)$", head, re.MULTILINE | re.IGNORECASE)  # gevent sends none here
    assert date is None or ROUNDED_DATE.match(date.group(1).strip())


@pytest.mark.parametrize("method, path, code", [("GET", "/no-such-page", 404),
                                                 ("POST", "/", 405)])
def test_error_pages_are_small_and_say_nothing_about_the_server(plain_server, method, path,
                                                                code):
    response = requests.request(method, plain_server + path, timeout=10)
    assert response.status_code == code
    assert f"<h1>{code} " in response.text
    assert 'href="/"' in response.text
    for leak in ("Traceback", "werkzeug", "Werkzeug", "gevent", "python", "/app/"):
        assert leak not in response.text


def test_pages_and_redirects_use_relative_urls_only(plain_server):
    redirect = requests.get(plain_server + "/stream.m3u8", allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith("/")
    for path in ("/", "/info", "/no-such-page"):
        body = requests.get(plain_server + path, timeout=10).text
        assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", body), path
        assert "127.0.0.1" not in body


def test_500_and_413_pages_hide_the_details(tmp_path):
    from flask import request

    app = make_app(tmp_path, {"server": {"max_body_bytes": 1000}})

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret detail of the server at /srv/livestream")

    @app.route("/upload", methods=["POST"])
    def upload():
        return str(len(request.form))

    client = app.test_client()
    crashed = client.get("/boom")
    assert crashed.status_code == 500
    assert b"<h1>500 Internal Server Error</h1>" in crashed.data
    assert b"secret detail" not in crashed.data and b"Traceback" not in crashed.data
    too_big = client.post("/upload", data={"text": "x" * 5000})
    assert too_big.status_code == 413
    assert b"<h1>413 " in too_big.data and b"too large" in too_big.data


# --- end to end through a private Tor network --------------------------------------------------

def curl_socks(socks_port: int, url: str, *args: str, timeout: float = 60):
    return subprocess.run(["curl", "--silent", "--socks5-hostname", f"127.0.0.1:{socks_port}",
                           "--max-time", str(timeout), *args, url],
                          check=False, capture_output=True, timeout=timeout + 10)


@contextmanager
def private_tor_network(base: Path, *options: str, timeout: float = 240):
    """privnet up in its own folder and ports (`options` passed on to `privnet.py up`);
    always taken down again. Port bases lie below Linux's ephemeral range (32768 on), where
    any outgoing connection may hold a port; one taken anyway means another try."""
    try:
        for _ in range(3):
            port_base = random.randrange(20000, 32000, 500)
            up = subprocess.run([sys.executable, str(PRIVNET), "up", "--base", str(base),
                                 "--port-base", str(port_base), *options],
                                check=False, capture_output=True, text=True, timeout=timeout)
            if up.returncode == 0:
                break
            if "pick another --port-base" not in up.stdout + up.stderr:
                pytest.fail(f"privnet up failed:\n{up.stdout}\n{up.stderr}")
        else:
            pytest.fail("privnet found no free port range")
        yield json.loads((base / "state.json").read_text())
    finally:
        subprocess.run([sys.executable, str(PRIVNET), "down", "--base", str(base)],
                       check=False, capture_output=True, timeout=60)


needs_ffmpeg_and_curl = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("curl") is None, reason="needs ffmpeg and curl")
PRIVNET_BUDGETS = {"identities": 10, "captchas": 4, "close_circuit_after": 20}


@pytest.fixture(scope="module")
def through_privnet(tmp_path_factory):
    """One private Tor network, one test stream and one `serve` attached to the network's
    onion-service tor for the tests below: (network state, server, address, port, folder)."""
    if not PRIVNET.exists():
        pytest.skip("no shared/tools/privnet.py beside the checkout")
    tmp_path = tmp_path_factory.mktemp("privnet-serve")
    stream_dir = tmp_path / "stream"
    stream_dir.mkdir()
    source = subprocess.Popen([str(REPO / "stream.sh"), "--test"], cwd=REPO,
                              env=dict(os.environ, STREAM_DIR=str(stream_dir), DURATION="300"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with private_tor_network(tmp_path / "privnet") as net:
            port, metrics_port = free_port(), free_port()
            with stem.control.Controller.from_port(port=net["hs_control_port"]) as tor:
                tor.authenticate()  # the network's tor shows its figures, as a user's would
                tor.set_options({"MetricsPort": f"127.0.0.1:{metrics_port}",
                                 "MetricsPortPolicy": "accept 127.0.0.1"})
            answers = tmp_path / "captcha-answers.txt"
            config = write_config(tmp_path / "app", {
                "server": {"port": port}, "stream": {"dir": str(stream_dir)},
                "tor": {"enabled": True, "mode": "attach", "metrics_port": metrics_port,
                        "control_port": net["hs_control_port"], "torrc": {}},
                "budgets": PRIVNET_BUDGETS, "broadcaster": {"password": "test-password"},
                "captcha": {"testing_answers_file": str(answers)}})
            with serving(config) as server:
                server.answers = answers
                yield net, server, server.address(), port, tmp_path
    finally:
        os.killpg(source.pid, signal.SIGTERM)
        source.wait(timeout=10)


@pytest.mark.slow
@needs_ffmpeg_and_curl
def test_video_through_a_private_tor_network(through_privnet):
    net, server, address, port, tmp_path = through_privnet
    assert "not reachable yet" in server.stdout
    # tor's own event says the descriptor is up; only then is it "reachable"
    server.wait_for(r"onion address reachable: http://" + re.escape(address), timeout=120)
    deadline = time.monotonic() + 60
    while "<video" not in requests.get(f"http://127.0.0.1:{port}/", timeout=5).text:
        assert time.monotonic() < deadline, "the test stream never went live"
        time.sleep(0.5)
    started, deadline = time.monotonic(), time.monotonic() + 90
    page_file = tmp_path / "page.html"
    while True:  # until the descriptor is published and a circuit is up
        page = curl_socks(net["socks_port"], f"http://{address}/", "--output",
                          str(page_file), "--write-out", "%{time_total}", timeout=30)
        if page.returncode == 0 and b"<video" in page_file.read_bytes():
            break
        assert time.monotonic() < deadline, f"page never came: {page.stderr!r}"
        time.sleep(1)
    print(f"\nthrough Tor: first page {time.monotonic() - started:.2f} s after "
          f"the address was printed (last fetch {float(page.stdout):.2f} s)")
    html = page_file.read_bytes()
    assert b"http://" not in html and b"https://" not in html
    video = curl_socks(net["socks_port"], f"http://{address}/stream.mp4",
                       "--output", str(tmp_path / "video.mp4"), "--write-out",
                       "%{time_connect} %{time_starttransfer}", timeout=8)
    assert video.returncode == 28, video  # stopped by --max-time: still live
    connect, first_byte = map(float, video.stdout.split())
    received = (tmp_path / "video.mp4").read_bytes()
    print(f"through Tor: SOCKS connect {connect * 1000:.0f} ms, first byte of "
          f"/stream.mp4 after {first_byte * 1000:.0f} ms, {len(received)} bytes in 8 s")
    assert received[4:8] == b"ftyp", received[:16]
    assert len(received) > 100_000
    # the service tells circuits and defends itself with proof-of-work and stream limits
    assert "proof-of-work" in server.stdout and "note: tor does not tell" not in server.stderr


def through(net: dict, who: str) -> dict:
    """requests' proxies for one Tor identity: tor keeps streams with different SOCKS
    credentials on different circuits (IsolateSOCKSAuth)."""
    proxy = f"socks5h://{who}:x@127.0.0.1:{net['socks_port']}"
    return {"http": proxy, "https": proxy}


@pytest.mark.slow
@needs_ffmpeg_and_curl
def test_one_circuit_inventing_viewers_is_held_and_closed_while_a_newcomer_posts(
        through_privnet):
    net, server, address, port, _ = through_privnet
    server.wait_for(r"onion address reachable", timeout=120)
    base = f"http://{address}"
    wait_for(lambda: _fetches(base + "/", through(net, "warm-up")), 90, interval=1.0,
             what="the onion service to answer")
    stop, answers, lock = threading.Event(), [], threading.Lock()

    def flood() -> None:
        session = requests.Session()  # keep-alive streams, all on the flood's circuit
        for n in range(2000):
            if stop.is_set():
                return
            path = "/chat/form" if n % 2 else f"/chat/form?token=invented-{n:012d}"
            session.cookies.clear()  # a new viewer each time, as a script inventing them
            try:
                status = session.get(base + path, proxies=through(net, "flood"),
                                     timeout=20).status_code
            except requests.RequestException:
                status = 0  # the circuit was closed under it
                session = requests.Session()
            with lock:
                answers.append(status)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) > 40, 60, what="the flood to get going")
        started = time.monotonic()
        newcomer = through(net, "newcomer")
        page = requests.get(base + "/", proxies=newcomer, timeout=30)
        token = re.search(r"/chat/form\?token=([\w-]+)", page.text).group(1)
        captcha_id = form = None
        for _ in range(2):  # a captcha within two reloads
            form = requests.get(f"{base}/chat/form?token={token}", proxies=newcomer,
                                timeout=30).text
            captcha_id = field(form, "captcha_id")
            if captcha_id:
                break
            time.sleep(1)
        assert captcha_id, "the newcomer got no captcha during the flood"
        to_captcha = time.monotonic() - started
        answer = wait_for(lambda: _answer(server.answers, captcha_id), 10,
                          what="the captcha answer")
        posted = requests.post(f"{base}/chat/form?token={token}", proxies=newcomer,
                               timeout=30, allow_redirects=False, data={
                                   "token": token, "nonce": field(form, "nonce"),
                                   "captcha_id": captcha_id, "captcha": answer,
                                   "message": "hello from another circuit"})
        assert posted.status_code == 303, posted.text[:200]
        to_post = time.monotonic() - started
        try:
            wait_for(lambda: "closing a circuit" in server.stderr, 60, interval=0.5,
                     what="the flooding circuit to be closed")
        except TimeoutError:
            raise AssertionError(f"no circuit closed; the flood got {Counter(answers)}") \
                from None
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    closed = server.stderr.count("closing a circuit")
    served = answers.count(200)
    print(f"\nthrough Tor, one identity flooding: {len(answers)} form loads, {served} served, "
          f"{answers.count(429)} refused, {answers.count(0)} cut; {closed} circuit(s) closed; "
          f"newcomer on another circuit: captcha after {to_captcha:.2f} s, posted after "
          f"{to_post:.2f} s")
    assert answers.count(0) > 0, "the flood's circuit was never closed under it"
    # the broadcaster sees it: the budgets' refusals and tor's own figures for the service
    scrape = requests.get(f"http://127.0.0.1:{port}/metrics",
                          auth=("broadcaster", "test-password"), timeout=10)
    figures = {sample.name: sample.value
               for family in text_string_to_metric_families(scrape.text)
               for sample in family.samples}
    print(f"tor's figures: { {k: v for k, v in figures.items() if 'tor_hs' in k} }")
    assert figures["livestream_budget_refusals_total"] >= answers.count(429)
    assert figures["livestream_tor_hs_rdv_num_total"] >= closed + 2
    # each circuit the flood used (the first, and one more per close) got its budget, no more
    assert served <= PRIVNET_BUDGETS["identities"] * (closed + 1)


def _fetches(url: str, proxies: dict) -> bool:
    try:
        return requests.get(url, proxies=proxies, timeout=20).status_code == 200
    except requests.RequestException:
        return False


def _answer(answers: Path, captcha_id: str) -> str | None:
    if not answers.exists():
        return None
    for line in answers.read_text().splitlines():
        found, answer = line.split()
        if found == captcha_id:
            return answer
    return None
