"""`livestream cloud` against a faithful fake DigitalOcean API on loopback.

The fake reports the droplet's public address as 127.0.0.1; each droplet it creates "boots"
(fake_droplet.py): the real receiver from the user-data listens on [cloud] http_port, `up`
uploads the real bundle to it, and a real `livestream serve` starts from the unpacked
bundle on that port, so `up` waits for a real server. `play` pushes with a tiny stand-in
for `livestream play` ([cloud] push_command). The receiver is also tested on its own, as a
subprocess on 127.0.0.1, against the real upload code and against hostile uploads.
"""
from __future__ import annotations

import ast
import base64
import gzip
import http.client
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests
import toml
import yaml
from fake_digitalocean import FakeDigitalOcean
from fake_droplet import FakeDroplets
from support import free_port, write_config

from app.cloud import receiver as cloud_receiver
from app.cloud import user_data as cloud_init
from app.cloud.deploy import Cloud, CloudError, read_token
from app.cloud.digitalocean import ApiError, DigitalOcean
from app.cloud.upload import UploadError, send_bundle
from app.config import PROJECT_DIR, load
from app.onion.keys import new_key

TOKEN = "dop_v1_" + "5ec7e7" * 10  # looks like a real token; must never be shown
TAG = "livestream-test"

FAKE_PUSH = r'''
import os, sys, time
marker = os.environ["PUSH_MARKER"]
with open(marker, "w") as f:
    f.write(" ".join(sys.argv[1:]) + "\n" + str(os.getpid()))
mode = os.environ.get("PUSH_MODE", "ok")
if mode == "fail":
    sys.exit(3)
if mode == "hang":
    time.sleep(60)
'''


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def fake():
    server = FakeDigitalOcean(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def droplets(tmp_path, fake):
    """Droplets the fake API creates boot the user-data's receiver and then the server."""
    machines = FakeDroplets(tmp_path / "droplets")
    fake.on_create = machines.boot
    fake.on_delete = machines.destroy
    yield machines
    machines.stop_all()


@pytest.fixture
def setup(tmp_path, fake, droplets):
    """A config pointing at the fake API and the droplets' port; returns a CLI runner."""
    port = free_port()
    marker = tmp_path / "pushed.txt"
    push = tmp_path / "fake_push.py"
    push.write_text(FAKE_PUSH)

    def cloud_config(**cloud):
        settings = {
            "api_url": fake.url, "tag": TAG, "region": "fra1", "http_port": port,
            "poll_interval": 0.05, "ready_timeout": 15.0, "retry_seconds": 0.01,
            "push_command": f"{sys.executable} {push} {{file}} {{url}}",
        }
        return write_config(tmp_path, {"cloud": dict(settings, **cloud)})

    def run(*args, token=TOKEN, env=None, config=None, timeout=60, **cloud):
        cfg = config or cloud_config(**cloud)
        environ = {k: v for k, v in os.environ.items() if k != "DIGITALOCEAN_TOKEN"}
        if token:
            environ["DIGITALOCEAN_TOKEN"] = token
        environ.update(PUSH_MARKER=str(marker), **(env or {}))
        return subprocess.run([sys.executable, "-m", "app.cli", "--config", str(cfg),
                               "--log-level", "debug", *args], cwd=PROJECT_DIR, env=environ,
                              capture_output=True, text=True, timeout=timeout, check=False)

    run.marker = marker
    run.write_config = cloud_config
    run.port = port
    run.tmp = tmp_path
    return run


def assert_no_token(result) -> None:
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    assert TOKEN[7:] not in result.stdout + result.stderr


def user_data_files(body: dict) -> dict:
    doc = yaml.safe_load(body["user_data"])
    return {f["path"]: f for f in doc["write_files"]}


def stream_key_of(body: dict) -> str:
    env = user_data_files(body)[cloud_init.ENV_FILE]["content"]
    return re.search(r"^LIVESTREAM_STREAM_KEY=(\S+)$", env, re.MULTILINE).group(1)


# ---- up ------------------------------------------------------------------------------------

def test_up_creates_one_tagged_droplet_waits_and_prints_urls(setup, fake, droplets, tmp_path):
    result = setup("cloud", "up")
    assert result.returncode == 0, result.stderr
    assert_no_token(result)
    assert fake.count("POST", "/v2/droplets") == 1
    body = fake.created_bodies[0]
    # the cheapest size offered in fra1: the 512 MB one, as the real API lists it
    # (docs/benchmarks.md "Cloud droplet memory": the services fit in 512 MiB)
    assert (body["size"], body["region"], body["tags"]) == ("s-1vcpu-512mb-10gb", "fra1",
                                                            [TAG])
    key = stream_key_of(body)
    assert len(key) >= 20
    out = result.stdout
    assert "droplet is new" in out  # visible progress while it boots
    assert re.search(r"uploading the project \(\d+ KiB, encrypted\)", out)
    assert "  uploaded (" in out
    assert f"watch at http://127.0.0.1:{setup.port}/" in out
    # no SSH key: the ingest listens on the droplet's loopback only, and `up` says so
    assert "nothing can push to it" in out and key not in out
    assert "ingest --host 127.0.0.1 --port 1935" in body["user_data"]
    assert "$0.00595 per hour, billed per second (at least 60 s or $0.01)" in out
    (droplet_id,) = fake.live_ids(TAG)
    assert fake.droplets[droplet_id]["status"] == "active"
    # the droplet got the project through the receiver, which then made way for the server
    assert droplets.receiver_codes[droplet_id] == 0
    src = droplets.files(droplet_id) / "opt" / "livestream" / "src"
    assert (src / "app" / "cli.py").read_bytes() == (PROJECT_DIR / "app" / "cli.py").read_bytes()
    assert (src / "config.toml").read_bytes() == (tmp_path / "config.toml").read_bytes()
    deploy_key = user_data_files(body)[cloud_init.DEPLOY_KEY_FILE]["content"].strip()
    assert len(deploy_key) == 64 and deploy_key not in result.stdout + result.stderr
    assert len(body["user_data"].encode()) < cloud_init.USER_DATA_LIMIT // 2


def test_up_refuses_a_second_droplet_unless_asked(setup, fake):
    fake.add_droplet(TAG)
    refused = setup("cloud", "up")
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--another" in refused.stderr
    assert fake.count("POST", "/v2/droplets") == 0
    allowed = setup("cloud", "up", "--another")
    assert allowed.returncode == 0, allowed.stderr
    assert len(fake.live_ids(TAG)) == 2


def test_up_destroys_the_droplet_when_the_server_never_answers(setup, fake, droplets):
    droplets.serve = False  # the bundle arrives, but the install never starts the server
    result = setup("cloud", "up", ready_timeout=3.0)
    assert result.returncode == 1
    assert "  uploaded (" in result.stdout
    assert "did not answer" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 1
    assert fake.count("DELETE", "/v2/droplets/") == 1
    assert fake.live_ids() == []


def test_up_destroys_the_droplet_when_the_upload_never_gets_through(setup, fake, droplets):
    droplets.receive = False  # nothing ever listens on the droplet's port
    result = setup("cloud", "up", ready_timeout=1.0)
    assert result.returncode == 1
    assert "receiver not up yet" in result.stdout  # bounded retries, visibly
    assert "could not upload the project" in result.stderr
    assert fake.count("DELETE", "/v2/droplets/") == 1
    assert fake.live_ids() == []


def test_size_not_offered_in_region_fails_before_creating(setup, fake):
    result = setup("cloud", "up", "--size", "s-2vcpu-2gb", "--region", "nyc1")
    assert result.returncode == 1
    assert "not offered in region 'nyc1'" in result.stderr and "fra1" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


def test_droplet_limit_gives_a_clear_message(setup, fake):
    fake.droplet_limit = 0
    result = setup("cloud", "up")
    assert result.returncode == 1
    assert "422" in result.stderr and "droplet limit is reached" in result.stderr
    assert_no_token(result)


def test_region_error_from_the_api_names_what_to_change(setup, fake):
    fake.fail_next("POST", "/v2/droplets", 422, body={
        "id": "unprocessable_entity", "message": "Region is not available"})
    result = setup("cloud", "up")
    assert result.returncode == 1
    assert "Region is not available" in result.stderr and "--region" in result.stderr


# ---- token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["env", "api-key", "file"])
def test_bad_token_is_refused_clearly_and_never_shown(setup, fake, tmp_path, how):
    fake.token = "the-right-one"
    if how == "env":
        result = setup("cloud", "status")
    elif how == "api-key":
        result = setup("cloud", "status", "--api-key", TOKEN, token=None)
    else:
        token_file = tmp_path / "do-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        result = setup("cloud", "status", token=None, token_file=str(token_file))
    assert result.returncode == 1
    assert "401" in result.stderr and "token was refused" in result.stderr
    assert_no_token(result)


def test_token_never_in_output_on_success_with_debug_logging(setup, fake):
    fake.add_droplet(TAG)
    for action in ("status", "down"):
        result = setup("cloud", action)
        assert result.returncode == 0, result.stderr
        assert_no_token(result)


def test_missing_token_says_where_to_put_one(setup):
    result = setup("cloud", "status", token=None)
    assert result.returncode == 1
    assert "DIGITALOCEAN_TOKEN" in result.stderr and "--api-key" in result.stderr


def test_token_sources_in_order(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(" from-file \n")
    assert read_token("from-flag", token_file, {"DIGITALOCEAN_TOKEN": "from-env"}) == "from-flag"
    assert read_token(None, token_file, {"DIGITALOCEAN_TOKEN": "from-env"}) == "from-env"
    assert read_token(None, token_file, {}) == "from-file"
    with pytest.raises(CloudError, match="cannot read the token file"):
        read_token(None, tmp_path / "missing", {})
    token_file.write_text("\n")
    with pytest.raises(CloudError, match="is empty"):
        read_token(None, token_file, {})


def test_client_repr_and_errors_hide_the_token(fake):
    client = DigitalOcean("wrong-" + TOKEN, fake.url, retries=0)
    assert TOKEN not in repr(client)
    with pytest.raises(ApiError) as caught:
        client.sizes()
    assert caught.value.status == 401
    assert TOKEN not in str(caught.value)


# ---- retries and pagination ----------------------------------------------------------------

def test_rate_limit_waits_for_retry_after_then_succeeds(fake):
    waits = []
    client = DigitalOcean(TOKEN, fake.url, sleep=waits.append)
    fake.max_per_page = 2
    fake.fail_next("GET", "/v2/sizes", 429, headers={"Retry-After": "7"}, body={
        "id": "too_many_requests", "message": "API Rate limit exceeded."})
    assert len(client.sizes()) == 5
    assert waits == [7.0]
    assert fake.count("GET", "/v2/sizes") == 4  # 1 refused + 3 pages


def test_rate_limit_without_retry_after_uses_the_reset_time(fake):
    waits = []
    client = DigitalOcean(TOKEN, fake.url, sleep=waits.append)
    fake.fail_next("GET", "/v2/droplets", 429, headers={
        "ratelimit-remaining": "0", "ratelimit-reset": str(int(time.time()) + 30)})
    assert client.droplets(TAG) == []
    assert len(waits) == 1 and 28 <= waits[0] <= 30


def test_server_errors_are_retried_with_backoff_then_give_up(fake):
    waits = []
    client = DigitalOcean(TOKEN, fake.url, retries=3, retry_seconds=0.5, sleep=waits.append)
    for _ in range(2):
        fake.fail_next("GET", "/v2/droplets", 503)
    assert client.droplets(TAG) == []
    assert waits == [0.5, 1.0]
    for _ in range(4):
        fake.fail_next("GET", "/v2/droplets", 500)
    with pytest.raises(ApiError, match="500"):
        client.droplets(TAG)
    assert waits[2:] == [0.5, 1.0, 2.0]


def test_create_is_not_repeated_after_a_server_error(fake):
    """A 5xx on POST may have created the droplet: repeating it could make two."""
    client = DigitalOcean(TOKEN, fake.url, sleep=lambda s: None)
    fake.fail_next("POST", "/v2/droplets", 500)
    with pytest.raises(ApiError, match="server error"):
        client.create_droplet({"name": "x", "region": "fra1", "size": "s-1vcpu-1gb",
                               "image": "debian-12-x64"})
    assert fake.count("POST", "/v2/droplets") == 1


def test_rate_limited_cli_run_still_succeeds(setup, fake):
    fake.fail_next("GET", "/v2/droplets", 429, headers={"Retry-After": "1"})
    fake.fail_next("GET", "/v2/sizes", 503)
    started = time.monotonic()
    result = setup("cloud", "status")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0
    assert "answered 429; retrying" in result.stderr  # logged, without the token
    assert_no_token(result)


def test_pagination_follows_next_links(fake):
    for _ in range(5):
        fake.add_droplet(TAG)
    fake.add_droplet("someone-else")
    fake.max_per_page = 2
    client = DigitalOcean(TOKEN, fake.url)
    ids = [d["id"] for d in client.droplets(TAG)]
    assert sorted(ids) == sorted(fake.live_ids(TAG)) and len(ids) == 5
    assert fake.count("GET", "/v2/droplets") == 3  # pages of 2


# ---- down / status -------------------------------------------------------------------------

def test_down_destroys_only_ours_and_checks_they_are_gone(setup, fake):
    ours = [fake.add_droplet(TAG)["id"] for _ in range(3)]
    other = fake.add_droplet("not-ours")["id"]
    result = setup("cloud", "down")
    assert result.returncode == 0, result.stderr
    assert "destroyed 3 droplet(s)" in result.stdout
    assert fake.count("DELETE", "/v2/droplets/") == 3
    assert set(fake.droplets) == {other}  # waited until the deleted ones left the listing
    assert not set(ours) & set(fake.live_ids())
    again = setup("cloud", "down")
    assert again.returncode == 0 and "no droplets tagged" in again.stdout


def test_status_shows_uptime_and_cost_so_far(setup, fake):
    fake.add_droplet(TAG, created_at=datetime.now(timezone.utc) - timedelta(minutes=90))
    result = setup("cloud", "status")
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert "active" in row and "127.0.0.1" in row and "s-1vcpu-1gb" in row
    assert "1 h 30 min" in row or "1 h 29 min" in row
    assert "$0.0134" in row  # 5400 s billed per second at $0.00893/h


def test_status_says_unknown_cost_for_a_size_without_a_price(setup, fake):
    droplet = fake.add_droplet(TAG)
    droplet["size"] = {"slug": "g-64vcpu-256gb"}  # no price from the API, none in the table
    droplet["size_slug"] = "g-64vcpu-256gb"
    result = setup("cloud", "status")
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert "g-64vcpu-256gb" in row and row.rstrip().endswith("unknown")
    assert "Traceback" not in result.stderr


# ---- play ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """A real film with one subtitle track: `cloud play` probes it before renting."""
    folder = tmp_path_factory.mktemp("cloud-movie")
    subs = folder / "line.srt"
    subs.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    path = folder / "movie.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=10",
                    "-f", "lavfi", "-i", "sine", "-i", str(subs), "-t", "1", "-map", "0",
                    "-map", "1", "-map", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-c:s", "srt", str(path)], check=True, timeout=60)
    return path


def test_play_pushes_the_file_then_destroys_the_droplet(setup, fake, movie):
    result = setup("cloud", "play", str(movie), "--subs", "0", "--video-size", "320x180",
                   "--in-clear")
    assert result.returncode == 0, result.stderr
    argv, _ = setup.marker.read_text().splitlines()
    key = stream_key_of(fake.created_bodies[0])
    assert argv == f"{movie} rtmp://127.0.0.1/live/{key} --subs 0 --size 320x180"
    assert fake.count("DELETE", "/v2/droplets/") == 1
    assert fake.live_ids() == []
    assert_no_token(result)


def test_play_destroys_the_droplet_when_the_push_fails(setup, fake, movie):
    result = setup("cloud", "play", str(movie), env={"PUSH_MODE": "fail"}, in_clear=True)
    assert result.returncode == 3
    assert setup.marker.exists()
    assert fake.count("DELETE", "/v2/droplets/") == 1 and fake.live_ids() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_play_destroys_the_droplet_on_interrupt(setup, fake, movie, tmp_path, sig):
    cfg = setup.write_config(in_clear=True)
    environ = dict(os.environ, DIGITALOCEAN_TOKEN=TOKEN, PUSH_MARKER=str(setup.marker),
                   PUSH_MODE="hang")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(cfg),
                             "cloud", "play", str(movie)], cwd=PROJECT_DIR, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (setup.marker.exists() and "\n" in setup.marker.read_text()):
            assert time.monotonic() < deadline, "the push never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        push_pid = int(setup.marker.read_text().splitlines()[1])
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "destroying the droplet" in out
    assert fake.count("DELETE", "/v2/droplets/") == 1 and fake.live_ids() == []
    with pytest.raises(ProcessLookupError):  # the push was stopped, not left behind
        for _ in range(50):
            os.kill(push_pid, 0)
            time.sleep(0.1)
    assert TOKEN not in out + err


def test_play_without_an_ssh_key_is_refused_unless_in_clear(setup, fake, movie):
    """Nothing crosses the internet in clear unless asked: without a key there is no SSH."""
    result = setup("cloud", "play", str(movie))
    assert result.returncode == 1
    assert "ssh_keys" in result.stderr and "--in-clear" in result.stderr
    assert "Nothing was created" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


def test_play_of_a_missing_file_creates_nothing(setup, fake, tmp_path):
    result = setup("cloud", "play", str(tmp_path / "nope.mp4"))
    assert result.returncode == 1 and "nope.mp4" in result.stderr
    assert "nothing was created" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


@pytest.mark.parametrize("options, message", [
    (["--subs", "5"], "subtitle"), (["--audio", "3"], "audio"),
    (["--start", "1:00:00"], "start"), (["--video-size", "huge"], "size")])
def test_play_checks_everything_play_checks_before_renting(setup, fake, movie, options,
                                                           message):
    result = setup("cloud", "play", str(movie), *options)
    assert result.returncode == 1
    assert message in result.stderr.lower() and "nothing was created" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


def test_play_takes_a_queue_as_play_does(setup, fake, movie):
    result = setup("cloud", "play", str(movie), "--subs", "0", "--", str(movie), "--start",
                   "0:00:00.5", in_clear=True)
    assert result.returncode == 0, result.stderr
    argv, _ = setup.marker.read_text().splitlines()
    assert argv.endswith(f"--subs 0 -- {movie} --start 0:00:00.5")


def test_default_push_command_is_livestream_play(fake):
    from app.cloud.deploy import Cloud
    from app.config import load

    config = load(PROJECT_DIR / "config.toml")
    argv = Cloud(DigitalOcean(TOKEN, fake.url), config).push_argv(
        ["film.mkv", "--subs", "subs.srt", "--", "b.mkv"], "rtmp://203.0.113.5/live/KEY")
    assert argv[1:3] == ["-m", "app.cli"]
    assert argv[-8:] == ["play", "film.mkv", "--subs", "subs.srt", "--to",
                         "rtmp://203.0.113.5/live/KEY", "--", "b.mkv"]


# ---- the cloud-init user-data ----------------------------------------------------------------

DEPLOY_KEY = bytes(range(32))


def settings_for(**overrides) -> cloud_init.DropletSettings:
    return cloud_init.DropletSettings(stream_key="k3y-Secret_value", deploy_key=DEPLOY_KEY.hex(),
                                      **overrides)


@pytest.fixture(scope="module")
def project_bundle() -> bytes:
    return cloud_init.bundle(PROJECT_DIR, PROJECT_DIR / "config.toml")


def test_user_data_is_valid_cloud_config_well_under_the_limit():
    user_data = cloud_init.render(settings_for())
    assert user_data.startswith("#cloud-config\n")
    assert len(user_data.encode()) < cloud_init.USER_DATA_LIMIT // 2
    doc = yaml.safe_load(user_data)
    files = {f["path"]: f for f in doc["write_files"]}
    receiver = (PROJECT_DIR / "app" / "cloud" / "receiver.py").read_text()
    assert files[f"{cloud_init.PREFIX}/receiver.py"]["content"] == receiver
    assert files[f"{cloud_init.PREFIX}/install.sh"]["content"] == cloud_init.INSTALL_SCRIPT
    assert files[cloud_init.DEPLOY_KEY_FILE]["permissions"] == "0600"
    assert files[cloud_init.DEPLOY_KEY_FILE]["content"] == DEPLOY_KEY.hex() + "\n"
    assert not [path for path in files if "bundle" in path]  # the project is not in it
    env = files[cloud_init.ENV_FILE]
    assert env["permissions"] == "0600"
    assert "LIVESTREAM_STREAM_KEY=k3y-Secret_value\n" in env["content"]
    assert "LIVESTREAM_PORT=80\n" in env["content"]
    assert "LIVESTREAM_RECEIVE_TIMEOUT=900\n" in env["content"]
    serve = files["/etc/systemd/system/livestream-serve.service"]["content"]
    ingest = files["/etc/systemd/system/livestream-ingest.service"]["content"]
    assert serve.rstrip().endswith("WantedBy=multi-user.target")
    assert re.search(r"^ExecStart=\S+/venv/bin/python -m app.cli --config \S+ serve$", serve,
                     re.MULTILINE)
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in serve  # port 80 without root
    assert re.search(r"^ExecStart=.* ingest --host 127.0.0.1 --port 1935$", ingest, re.MULTILINE)
    assert "0.0.0.0" in cloud_init.render(settings_for(in_clear=True)).split("ingest --host")[1]
    wrapper = files[cloud_init.REMOTE_COMMAND]
    assert wrapper["permissions"] == "0755" and "runuser -u livestream" in wrapper["content"]
    assert "k3y-Secret_value" not in ingest  # the key stays in the root-only env file
    assert DEPLOY_KEY.hex() not in serve + ingest
    assert doc["runcmd"] == [["bash", f"{cloud_init.PREFIX}/install.sh"]]


def test_user_data_does_not_grow_when_the_project_grows(tmp_path, project_bundle):
    copy = tmp_path / "project"
    for name in cloud_init.SHIPPED_DIRS:
        shutil.copytree(PROJECT_DIR / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in cloud_init.SHIPPED_FILES:
        shutil.copy2(PROJECT_DIR / name, copy / name)
    # incompressible, and on its own more than the whole user-data could ever hold
    (copy / "app" / "big_dummy.py").write_text(f"DATA = {os.urandom(150_000).hex()!r}\n")
    config = load(PROJECT_DIR / "config.toml")
    api = DigitalOcean(TOKEN, "http://127.0.0.1:9")  # prepare() makes no API call
    user_data, bundle = Cloud(api, config).prepare("k3y", DEPLOY_KEY)
    grown_user_data, grown_bundle = Cloud(api, config, project_dir=copy).prepare("k3y",
                                                                                  DEPLOY_KEY)
    assert bundle == project_bundle
    assert len(grown_bundle) > len(bundle) + cloud_init.USER_DATA_LIMIT  # the project grew...
    assert grown_user_data == user_data  # ...and the user-data did not change at all
    assert len(user_data.encode()) < cloud_init.USER_DATA_LIMIT // 2


def test_too_big_a_bundle_is_refused_before_a_droplet_exists(monkeypatch):
    monkeypatch.setattr(cloud_receiver, "MAX_BUNDLE_BYTES", 10_000)
    cloud = Cloud(DigitalOcean(TOKEN, "http://127.0.0.1:9"), load(PROJECT_DIR / "config.toml"))
    with pytest.raises(CloudError, match="over the 10000-byte cap; remove large files"):
        cloud.prepare("k3y", DEPLOY_KEY)


def test_user_data_over_the_limit_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="over DigitalOcean's 65536-byte limit"):
        cloud_init.render(settings_for(ingest_args="ingest " + "x" * 70_000))


def test_a_key_placeholder_in_ingest_args_is_expanded_by_systemd_not_by_us():
    args = cloud_init.ingest_args(settings_for(ingest_args="ingest --port {port} --key {key}"))
    assert args == "ingest --port 1935 --key ${LIVESTREAM_STREAM_KEY}"


def test_install_script_receives_first_then_uses_distribution_packages_and_wheels():
    script = cloud_init.INSTALL_SCRIPT
    assert re.search(r"apt-get .*install .*\n?.*ffmpeg tor python3-venv", script)
    assert re.search(r'--prefer-binary -c "\$prefix/src/constraints.txt" -r '
                     r'"\$prefix/src/requirements.txt"', script)
    assert "systemctl enable --now livestream-serve.service livestream-ingest.service" in script
    main = script[script.index("main() {"):]
    assert main.index("receive_bundle") < main.index("install_system_packages") \
        < main.index("start_services")


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (.ci/setup --test installs it)")
@pytest.mark.parametrize("name", ["INSTALL_SCRIPT", "REMOTE_WRAPPER"])
def test_install_script_is_shellcheck_clean(tmp_path, name):
    script = tmp_path / "script.sh"
    script.write_text(getattr(cloud_init, name))
    result = subprocess.run(["shellcheck", "--severity=style", str(script)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_bundle_is_reproducible_and_holds_what_the_droplet_runs(project_bundle):
    assert cloud_init.bundle(PROJECT_DIR, PROJECT_DIR / "config.toml") == project_bundle
    with tarfile.open(fileobj=io.BytesIO(project_bundle)) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()
        cli = tar.extractfile("app/cli.py").read()
    for needed in ("app/cli.py", "app/__init__.py", "templates/index.html", "static/style.css",
                   "config.toml", "pyproject.toml", "requirements.txt", "stream.sh"):
        assert needed in names
    assert cli == (PROJECT_DIR / "app" / "cli.py").read_bytes()  # shipped as written
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # the droplet does not deploy droplets; the receiver comes in the user-data
    assert not [n for n in names if n.startswith("app/cloud/")]
    deps = toml.load(PROJECT_DIR / "pyproject.toml")["project"]["dependencies"]
    assert requirements.splitlines() == deps


def test_the_receiver_imports_only_the_standard_library():
    """It runs before pip, on whatever python3 the image has."""
    tree = ast.parse(cloud_init.RECEIVER_SOURCE)
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules and modules <= set(sys.stdlib_module_names)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels of the runtime requirements at the pinned versions (constraints.txt), built
    once with the .venv's pip from the package index: the install script's offline mode
    installs from these and nothing else, as the droplet does from PyPI."""
    folder = tmp_path_factory.mktemp("wheels")
    requirements = folder / "requirements.txt"
    requirements.write_text(cloud_init.requirements(PROJECT_DIR / "pyproject.toml"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         # stem has no wheel: build it the PEP 517 way (setuptools and wheel fetched into the
         # build's own environment), since a fresh venv's pip may lack the `wheel` package
         "--use-pep517", "-w", str(folder), "-r", str(requirements),
         "-c", str(PROJECT_DIR / "constraints.txt")],
        capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_the_install_script_receives_the_bundle_and_builds_a_venv_that_serves_it(
        tmp_path, project_bundle, wheelhouse):
    """The droplet's install, run here as far as this machine allows: the receiver from the
    user-data takes the bundle from the real upload code on the droplet's HTTP port, the
    script builds a fresh virtual environment (no access to any other site-packages) from
    wheels only, with the shipped constraints, then the server starts on that same port
    exactly as the systemd unit starts it."""
    port = free_port()
    onion_key = "ED25519-V3:" + base64.b64encode(new_key().secret).decode()
    user_data = cloud_init.render(settings_for(http_port=port, receive_timeout=120,
                                               onion_key=onion_key,
                                               broadcaster_password="pw-Secret_1"))
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "receiver.py").write_text(files[f"{cloud_init.PREFIX}/receiver.py"])
    script = prefix / "install.sh"
    script.write_text(files[f"{cloud_init.PREFIX}/install.sh"])
    env_file = tmp_path / "env"
    env_file.write_text(files[cloud_init.ENV_FILE])
    key_file = tmp_path / "deploy.key"
    key_file.write_text(files[cloud_init.DEPLOY_KEY_FILE])
    key_file.chmod(0o600)
    data = tmp_path / "data"
    # this machine's pip settings (config files, PIP_* variables: extra indexes, find-links)
    # stay out; the venv gets the wheelhouse and nothing else, as on a fresh machine
    machine = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env = dict(machine, LIVESTREAM_OFFLINE="1", LIVESTREAM_PREFIX=str(prefix),
               LIVESTREAM_WHEELS=str(wheelhouse), PIP_CONFIG_FILE=os.devnull,
               LIVESTREAM_PYTHON=sys.executable, LIVESTREAM_ENV_FILE=str(env_file),
               LIVESTREAM_DEPLOY_KEY_FILE=str(key_file), LIVESTREAM_RECEIVE_HOST="127.0.0.1",
               LIVESTREAM_DATA_DIR=str(data))
    install = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        progress: list[str] = []
        send_bundle(f"http://127.0.0.1:{port}/", DEPLOY_KEY, project_bundle,
                    deadline_seconds=30, interval=0.1, out=progress.append)
        output, _ = install.communicate(timeout=300)
    finally:
        if install.poll() is None:
            install.kill()
            install.communicate()
    assert install.returncode == 0, output
    assert "cloud-receiver: INFO received the bundle" in output
    assert "livestream-install: done" in output
    assert progress[-1].startswith("  uploaded")
    assert not key_file.exists()  # the deploy key is deleted once it has done its job
    python = prefix / "venv" / "bin" / "python"
    assert python.exists()
    key_file = data / "state" / "ingest.key"  # where the RTMP ingest looks for its key
    assert key_file.read_text() == "k3y-Secret_value\n"
    assert key_file.stat().st_mode & 0o777 == 0o600
    # the onion key `cloud up` made is where serve looks for it, owner-only, and gone from
    # the environment file the services read
    onion_file = data / "state" / "onion" / "private_key"
    assert onion_file.read_text() == onion_key + "\n"
    assert onion_file.stat().st_mode & 0o777 == 0o600
    assert (data / "state" / "onion").stat().st_mode & 0o777 == 0o700
    assert "ONION" not in env_file.read_text()
    assert "LIVESTREAM_BROADCASTER_PASSWORD=pw-Secret_1\n" in env_file.read_text()
    # a venv of its own: it cannot see this machine's or the .venv's packages
    isolated = subprocess.run([str(python), "-c", "import sys, flask_httpauth, stem; "
                               "print(sys.prefix, sys.base_prefix, flask_httpauth.__file__)"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    assert str(prefix / "venv") in isolated.split()[2]
    config_file = prefix / "venv" / "pyvenv.cfg"
    assert "include-system-site-packages = false" in config_file.read_text()
    frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True,
                            text=True, timeout=60, check=True).stdout.lower()
    for pin in (PROJECT_DIR / "constraints.txt").read_text().splitlines():
        name = pin.split("==")[0]
        if pin and not pin.startswith("#") and re.search(rf"^{name}==", frozen, re.M):
            assert pin.lower() in frozen  # installed at the version the tests passed with

    unit_env = dict(os.environ, LIVESTREAM_HOST="127.0.0.1", LIVESTREAM_PORT=str(port),
                    LIVESTREAM_STREAM_DIR=str(data / "stream"),
                    LIVESTREAM_STATE_DIR=str(data / "state"))
    unit_env.pop("PYTHONPATH", None)
    server = subprocess.Popen([str(python), "-m", "app.cli", "--config",
                               str(prefix / "src" / "config.toml"), "serve"],
                              cwd=prefix / "src", env=unit_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


# ---- the one-shot receiver, as a subprocess on 127.0.0.1 -----------------------------------

@dataclass
class RunningReceiver:
    process: subprocess.Popen
    port: int
    dest: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def challenge(self) -> bytes:
        return bytes.fromhex(requests.get(self.url + "challenge", timeout=5).text)

    def post(self, body) -> requests.Response:
        return requests.post(self.url + "bundle", data=body, timeout=10)

    def written(self) -> list[Path]:
        """Everything under the folder the bundle goes into (its parent exists beforehand)."""
        return sorted(self.dest.parent.rglob("*"))

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                self.challenge()
                return
            except (requests.RequestException, ValueError):
                time.sleep(0.02)
        raise AssertionError("the receiver never listened")


@pytest.fixture
def receivers(tmp_path):
    """Start the real receiver script, isolated from site-packages (-I -S: standard library
    only, as on a droplet before pip), with its own key file and destination."""
    started: list[RunningReceiver] = []

    def start(key: bytes = DEPLOY_KEY, timeout: float = 30.0, max_bytes: int | None = None,
              port: int | None = None) -> RunningReceiver:
        run = tmp_path / f"run{len(started)}"
        (run / "opt").mkdir(parents=True)
        key_file = run / "deploy.key"
        key_file.write_text(key.hex() + "\n")
        port = port or free_port()
        argv = [sys.executable, "-I", "-S", str(PROJECT_DIR / "app" / "cloud" / "receiver.py"),
                "--key-file", str(key_file), "--dest", str(run / "opt" / "src"),
                "--host", "127.0.0.1", "--port", str(port), "--timeout", str(timeout)]
        if max_bytes is not None:
            argv += ["--max-bytes", str(max_bytes)]
        with open(run / "receiver.log", "wb") as log:
            process = subprocess.Popen(argv, cwd=run, stdout=log, stderr=log)
        receiver = RunningReceiver(process, port, run / "opt" / "src", run / "receiver.log")
        started.append(receiver)
        receiver.wait_listening()
        return receiver

    yield start
    for receiver in started:
        if receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.wait()


def tar_gz(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return raw.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_receiver_takes_one_valid_upload_unpacks_it_and_frees_the_port(receivers,
                                                                          project_bundle):
    port = free_port()
    started: list[RunningReceiver] = []

    def sleep(seconds: float) -> None:
        if not started:  # the first attempt found nothing listening: the droplet boots now
            started.append(receivers(port=port))
        time.sleep(seconds)

    progress: list[str] = []
    send_bundle(f"http://127.0.0.1:{port}/", DEPLOY_KEY, project_bundle, deadline_seconds=20,
                interval=0.05, out=progress.append, sleep=sleep)
    (receiver,) = started
    assert progress[0].startswith("uploading the project (")
    assert progress[1].startswith("  receiver not up yet (")  # retried, visibly
    assert progress[-1].startswith("  uploaded (")
    assert receiver.process.wait(timeout=10) == 0
    with tarfile.open(fileobj=io.BytesIO(project_bundle)) as tar:
        for member in tar.getmembers():
            assert (receiver.dest / member.name).read_bytes() == \
                tar.extractfile(member).read(), member.name
    assert (receiver.dest / "stream.sh").stat().st_mode & 0o777 == 0o755
    assert (receiver.dest / "config.toml").stat().st_mode & 0o777 == 0o644
    assert not list(receiver.dest.parent.glob(".receiving-*"))  # no staging left behind
    with pytest.raises(requests.ConnectionError):  # the port is free for the server
        requests.get(receiver.url + "challenge", timeout=2)
    log = receiver.log.read_text()
    assert "received the bundle" in log and DEPLOY_KEY.hex() not in log


def test_receiver_refuses_tampered_and_unauthenticated_uploads_and_writes_nothing(
        receivers, project_bundle):
    receiver = receivers()
    challenge = receiver.challenge()
    sealed = cloud_receiver.seal(DEPLOY_KEY, challenge, project_bundle)
    tampered = bytearray(sealed)
    tampered[len(sealed) // 2] ^= 0x01  # one bit of the ciphertext
    refused = {
        "tampered": (bytes(tampered), 403),
        "tag cut short": (sealed[:-1], 403),
        "sealed with another key": (
            cloud_receiver.seal(os.urandom(32), challenge, project_bundle), 403),
        "the bundle in clear": (project_bundle, 400),
        "empty": (b"", 400),
    }
    for case, (body, status) in refused.items():
        answer = receiver.post(body)
        assert answer.status_code == status, case
        assert receiver.written() == [], case
    chunked = requests.post(receiver.url + "bundle", data=iter([sealed]), timeout=10)
    assert chunked.status_code == 411  # no Content-Length, no upload
    assert receiver.process.poll() is None  # still waiting for the real one
    assert receiver.post(sealed).status_code == 200
    assert receiver.process.wait(timeout=10) == 0
    assert (receiver.dest / "app" / "cli.py").exists()
    assert receiver.log.read_text().count("refused an upload") == len(refused) + 1


def test_receiver_refuses_an_oversize_upload_from_its_length_alone(receivers):
    receiver = receivers(max_bytes=10_000)
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
    try:
        connection.putrequest("POST", "/bundle")
        connection.putheader("Content-Length", str(10**12))  # and no body is ever sent
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413
        assert "at most" in answer.read().decode()
    finally:
        connection.close()
    assert receiver.written() == [] and receiver.process.poll() is None


def test_the_uploader_refuses_a_bundle_over_the_cap_without_sending_it():
    too_big = bytes(cloud_receiver.MAX_BUNDLE_BYTES + 1)
    with pytest.raises(UploadError, match="over the receiver's"):
        send_bundle(f"http://127.0.0.1:{free_port()}/", DEPLOY_KEY, too_big,
                    deadline_seconds=5, interval=0.05, out=[].append)


def test_a_replayed_upload_is_refused(receivers, project_bundle):
    first = receivers()
    recorded = cloud_receiver.seal(DEPLOY_KEY, first.challenge(), project_bundle)
    assert first.post(recorded).status_code == 200
    assert first.process.wait(timeout=10) == 0
    second = receivers()  # the same droplet's key, a later run of the receiver
    answer = second.post(recorded)
    assert answer.status_code == 409 and "replay" in answer.text
    assert second.written() == [] and second.process.poll() is None


def test_an_upload_is_accepted_at_most_once_within_a_run(tmp_path):
    receiver = cloud_receiver.Receiver(DEPLOY_KEY, tmp_path / "src")
    sealed = cloud_receiver.seal(DEPLOY_KEY, receiver.challenge,
                                 tar_gz([entry("../escape.txt")]))
    with pytest.raises(cloud_receiver.Rejected) as first:
        receiver.accept(sealed)
    assert first.value.status == 422
    with pytest.raises(cloud_receiver.Rejected) as again:
        receiver.accept(sealed)
    assert again.value.status == 409 and "replay" in again.value.reason
    assert list(tmp_path.iterdir()) == [] and not receiver.done


@pytest.mark.parametrize("members,why", [
    ([entry("app/ok.py"), entry("../escape.txt")], "unsafe name"),
    ([entry("/tmp/absolute.txt")], "unsafe name"),
    ([entry("app/link", tarfile.SYMTYPE, "/etc/passwd")], "not a plain file"),
    ([entry("app/ok.py"), entry("app/hard", tarfile.LNKTYPE, "app/ok.py")], "not a plain file"),
    ([entry("app/fifo", tarfile.FIFOTYPE)], "not a plain file"),
])
def test_an_authentic_bundle_with_unsafe_entries_is_refused_and_nothing_written(
        receivers, tmp_path, members, why):
    receiver = receivers()
    sealed = cloud_receiver.seal(DEPLOY_KEY, receiver.challenge(), tar_gz(members))
    answer = receiver.post(sealed)
    assert answer.status_code == 422 and why in answer.text
    assert receiver.written() == []
    assert not [p for p in tmp_path.rglob("*") if p.name in ("escape.txt", "absolute.txt")]
    assert receiver.process.poll() is None


def test_an_authentic_upload_that_is_not_a_tar_is_refused(receivers):
    receiver = receivers()
    answer = receiver.post(cloud_receiver.seal(DEPLOY_KEY, receiver.challenge(), b"not a tar"))
    assert answer.status_code == 422 and "cannot be unpacked" in answer.text
    assert receiver.written() == []


def test_receiver_gives_up_when_no_valid_upload_arrives(receivers):
    receiver = receivers(timeout=1.0)
    assert receiver.post(b"junk").status_code == 400  # a bad upload does not count
    assert receiver.process.wait(timeout=15) == cloud_receiver.EXIT_TIMED_OUT
    assert "no valid upload arrived within 1 s" in receiver.log.read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(receiver.url + "challenge", timeout=2)
    assert receiver.written() == []


def test_an_answer_without_a_valid_receipt_is_not_trusted(project_bundle):
    """Something else on the droplet's address says 200: the upload must not count."""
    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):
            self._answer(os.urandom(16).hex())

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer("00" * 32)

        def _answer(self, text):
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UploadError, match="without proving it holds the deploy key"):
            send_bundle(f"http://127.0.0.1:{server.server_port}/", DEPLOY_KEY, project_bundle,
                        deadline_seconds=5, interval=0.05, out=[].append)
    finally:
        server.shutdown()
        server.server_close()


def test_receiver_will_not_overwrite_an_existing_install(tmp_path):
    dest = tmp_path / "src"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    key_file = tmp_path / "deploy.key"
    key_file.write_text(DEPLOY_KEY.hex())
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(PROJECT_DIR / "app" / "cloud" / "receiver.py"),
         "--key-file", str(key_file), "--dest", str(dest), "--host", "127.0.0.1",
         "--port", str(free_port()), "--timeout", "5"],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1
    assert "already holds files" in result.stderr
    assert (dest / "keep.txt").read_text() == "mine"


# ---- issue 14: a droplet that fits, a private way in, per-second costs, a strict fake ------

def env_of(body: dict) -> dict[str, str]:
    content = user_data_files(body)[cloud_init.ENV_FILE]["content"]
    return dict(line.split("=", 1) for line in content.splitlines())


def test_the_droplet_adds_swap_and_stops_the_system_tor_it_does_not_use():
    """Point 1: the 512 MB default (docs/benchmarks.md) gets swap before apt runs, and the
    tor package's own daemon is stopped: serve launches the tor of the onion service."""
    script = cloud_init.INSTALL_SCRIPT
    main = script[script.index("main() {"):]
    assert main.index("make_swap") < main.index("install_system_packages")
    install = script[script.index("install_system_packages() {"):
                     script.index("make_virtualenv() {")]
    assert install.index("apt-get") < install.index("systemctl disable --now tor.service")
    assert "swapon /swapfile" in script and "mkswap /swapfile" in script
    settings = load(PROJECT_DIR / "config.toml").cloud
    assert settings.size == "cheapest" and settings.swap_mib >= 512
    user_data = cloud_init.render(settings_for(swap_mib=settings.swap_mib, onion=True))
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
    assert f"LIVESTREAM_SWAP_MIB={settings.swap_mib}\n" in files[cloud_init.ENV_FILE]
    serve = files["/etc/systemd/system/livestream-serve.service"]
    assert re.search(r"^ExecStart=.* serve --onion --clearnet$", serve, re.MULTILINE)


def test_up_prints_a_private_way_into_the_broadcaster_page_once(setup, fake, droplets):
    """Point 2: the password and the onion key are made by `up`; the password is printed
    once, the onion address is the key's, and the droplet refuses /broadcaster in clear."""
    fingerprint = "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"
    result = setup("cloud", "up", ssh_keys=[fingerprint])
    assert result.returncode == 0, result.stderr
    body = fake.created_bodies[0]
    assert body["ssh_keys"] == [fingerprint]
    env = env_of(body)
    password = env["LIVESTREAM_BROADCASTER_PASSWORD"]
    assert len(password) >= 20
    assert env["LIVESTREAM_BROADCASTER_ALLOW_CLEARNET"] == "false"
    from app.onion.keys import parse_key
    address = parse_key(env["LIVESTREAM_ONION_KEY"].encode(), "env").address
    out = result.stdout
    assert out.count(password) == 1 and password not in result.stderr
    assert f"through Tor: http://{address}/broadcaster" in out
    known_hosts = setup.tmp / "state" / "cloud" / "known_hosts"
    alias = known_hosts.read_text().split()[0]
    assert (f"ssh -N -o UserKnownHostsFile={known_hosts} -o HostKeyAlias={alias} "
            f"-L 8080:127.0.0.1:{setup.port} root@127.0.0.1") in out
    # the host key pinned for that name is the one the user-data gives cloud-init
    pinned = known_hosts.read_text().split()[1:3]
    assert yaml.safe_load(body["user_data"])["ssh_keys"]["ed25519_public"].split()[:2] == pinned
    assert "-L 127.0.0.1:1935:127.0.0.1:1935" in out  # OBS's way to the loopback ingest
    assert "http://127.0.0.1:8080/broadcaster" in out
    assert not re.search(rf"http://127\.0\.0\.1:{setup.port}/broadcaster", out)
    assert address not in body["user_data"].replace(env["LIVESTREAM_ONION_KEY"], "")
    # the printed password opens the droplet's /broadcaster from loopback (as an SSH tunnel
    # or the onion service arrive), and a wrong one does not
    page = f"http://127.0.0.1:{setup.port}/broadcaster"
    assert requests.get(page, auth=("broadcaster", password), timeout=10).status_code == 200
    assert requests.get(page, auth=("broadcaster", "guess"), timeout=10).status_code == 401
    (droplet_id,) = fake.live_ids(TAG)
    key_file = droplets.files(droplet_id) / "var" / "state" / "onion" / "private_key"
    assert parse_key(key_file.read_bytes(), "droplet").address == address


def test_the_broadcaster_page_is_refused_on_a_public_address_when_told(tmp_path):
    """Point 2, the server side: allow_clearnet = false offers /broadcaster to loopback
    peers only (the onion service and SSH tunnels arrive from there)."""
    from app import create_app
    from app.config import from_dict

    def client(allow: bool):
        config = from_dict({"server": {"state_dir": str(tmp_path / f"state{allow}")},
                            "stream": {"dir": str(tmp_path / "stream")},
                            "broadcaster": {"password": "pw", "allow_clearnet": allow}})
        return create_app(config).test_client(use_cookies=False)

    auth = {"Authorization": "Basic " + base64.b64encode(b"broadcaster:pw").decode()}
    private = client(False)
    for public in ("203.0.113.9", "::ffff:203.0.113.9", "2001:db8::1"):
        answer = private.get("/broadcaster", headers=auth,
                             environ_base={"REMOTE_ADDR": public})
        assert answer.status_code == 404, public
        assert b"onion address or an SSH tunnel" in answer.data
    for loopback in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        answer = private.get("/broadcaster", headers=auth,
                             environ_base={"REMOTE_ADDR": loopback})
        assert answer.status_code == 200, loopback
    assert private.get("/", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200
    assert client(True).get("/broadcaster", headers=auth, environ_base={
        "REMOTE_ADDR": "203.0.113.9"}).status_code == 200  # the default is unchanged
    from app.config import environment_overrides
    assert environment_overrides({"LIVESTREAM_BROADCASTER_ALLOW_CLEARNET": "false",
                                  "LIVESTREAM_BROADCASTER_PASSWORD": "x"}) == {
        "broadcaster.allow_clearnet": False, "broadcaster.password": "x"}


def test_status_bills_per_second_with_the_minimum(setup, fake):
    """Point 3: 2.5 h on the cheapest size is $0.0149 (not three started hours); a droplet
    a few seconds old costs the $0.01 minimum."""
    now = datetime.now(timezone.utc)
    fake.add_droplet(TAG, created_at=now - timedelta(hours=2.5), size="s-1vcpu-512mb-10gb")
    fake.add_droplet(TAG, created_at=now - timedelta(seconds=5))
    result = setup("cloud", "status")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[1:3]
    assert "$0.0149" in first and "2 h 30 min" in first
    assert second.rstrip().endswith("$0.0100")


def test_a_server_error_on_create_destroys_the_droplet_it_made_anyway(setup, fake):
    """Point 4: the 500 came after the droplet was made; it is found by tag and name and
    destroyed before the error is reported."""
    fake.create_then_fail(500)
    result = setup("cloud", "up")
    assert result.returncode == 1
    assert "500" in result.stderr and "server error" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 1  # never repeated
    assert fake.count("DELETE", "/v2/droplets/") == 1
    assert fake.live_ids() == []
    assert "destroying them so they do not cost money" in result.stdout
    assert result.stdout.index("destroyed 1 droplet(s)") < len(result.stdout)
    assert ("GET", "/v2/droplets", {"tag_name": TAG, "per_page": "200", "page": "1"}) \
        in fake.queries  # looked up by tag (tag_name and name cannot be combined)


def test_a_server_error_on_create_that_made_nothing_is_reported_plainly(setup, fake):
    fake.fail_next("POST", "/v2/droplets", 503)
    result = setup("cloud", "up")
    assert result.returncode == 1 and "503" in result.stderr
    assert "no droplet named livestream-" in result.stdout
    assert fake.count("DELETE", "/v2/droplets/") == 0


def test_a_locked_droplet_is_deleted_once_unlocked_and_only_then_reported(setup, fake):
    """Point 5: DELETE on a locked droplet is refused (422); down waits and retries."""
    droplet_id = fake.add_droplet(TAG)["id"]
    fake.lock_deletes(droplet_id, 2)
    result = setup("cloud", "down")
    assert result.returncode == 0, result.stderr
    assert fake.count("DELETE", "/v2/droplets/") == 3
    assert result.stdout.count("is locked by an action; trying again") == 2
    assert "destroyed 1 droplet(s)" in result.stdout
    assert fake.live_ids() == [] and droplet_id not in fake.droplets


def test_a_droplet_locked_for_good_is_never_reported_destroyed(setup, fake):
    droplet_id = fake.add_droplet(TAG)["id"]
    fake.lock_deletes(droplet_id, 10**6)
    result = setup("cloud", "down", ready_timeout=1.0)
    assert result.returncode == 1
    assert "destroyed" not in result.stdout
    assert f"{droplet_id} are still there after deletion (locked or still listed)" \
        in result.stderr
    assert droplet_id in fake.live_ids()


def test_the_default_image_is_the_newest_debian_the_api_offers(setup, fake):
    """Point 6: debian-13-x64 from GET /v2/images?type=distribution, not a fixed slug."""
    result = setup("cloud", "up")
    assert result.returncode == 0, result.stderr
    assert fake.created_bodies[0]["image"] == "debian-13-x64"
    assert ("GET", "/v2/images", {"type": "distribution", "per_page": "200", "page": "1"}) \
        in fake.queries
    fake.images = [i for i in fake.images if i["slug"] != "debian-13-x64"]
    assert setup("cloud", "down").returncode == 0  # frees the droplet's port
    again = setup("cloud", "up")
    assert again.returncode == 0, again.stderr
    assert fake.created_bodies[1]["image"] == "debian-12-x64"


def test_a_configured_image_that_does_not_exist_fails_before_creating(setup, fake):
    result = setup("cloud", "up", "--image", "debian-11-x64")
    assert result.returncode == 1
    assert "no image 'debian-11-x64'" in result.stderr
    assert "debian-13-x64, debian-12-x64" in result.stderr and "--image" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0
    assert setup("cloud", "up", "--image", "ubuntu-24-04-x64").returncode == 0
    assert fake.created_bodies[0]["image"] == "ubuntu-24-04-x64"


def test_constraints_pin_every_runtime_dependency_at_the_tested_version(project_bundle):
    """Point 7: constraints.txt holds the versions installed here (the tests pass with
    them), every runtime requirement is pinned, and the bundle ships it."""
    from importlib import metadata
    pins = {}
    for line in (PROJECT_DIR / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    for dep in toml.load(PROJECT_DIR / "pyproject.toml")["project"]["dependencies"]:
        name = re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, dep
        assert metadata.version(name) == pins[name], name
    with tarfile.open(fileobj=io.BytesIO(project_bundle)) as tar:
        assert tar.extractfile("constraints.txt").read() == \
            (PROJECT_DIR / "constraints.txt").read_bytes()


# ---- point 8: the fake is as strict as the specification -------------------------------------

def create_body(**overrides) -> dict:
    return dict({"name": "livestream-1", "region": "fra1", "size": "s-1vcpu-512mb-10gb",
                 "image": "debian-13-x64", "tags": [TAG]}, **overrides)


@pytest.mark.parametrize("overrides,why", [
    ({"name": "has space"}, "valid hostname characters"),
    ({"name": "trailing-dash-"}, "valid hostname characters"),
    ({"name": "under_score"}, "valid hostname characters"),
    ({"name": "x" * 256}, "valid hostname characters"),
    ({"tags": ["live stream"]}, "Tags may contain"),
    ({"tags": ["t" * 256]}, "Tags may contain"),
    ({"user_data": "#!/bin/sh\n" + "x" * (64 * 1024)}, "64 KiB"),
    ({"image": "debian-11-x64"}, "invalid image"),
    ({"ssh_keys": [1234]}, "invalid SSH key"),
    ({"size": "512mb"}, "not available in this region"),
    ({"image": None}, "image is required"),
])
def test_the_fake_refuses_what_the_specification_refuses(fake, overrides, why):
    client = DigitalOcean(TOKEN, fake.url, retries=0)
    with pytest.raises(ApiError) as caught:
        client.create_droplet(create_body(**overrides))
    assert caught.value.status == 422 and why in str(caught.value)
    assert fake.live_ids() == []


def test_the_fake_accepts_a_valid_request_and_locks_a_new_droplet(fake):
    client = DigitalOcean(TOKEN, fake.url, retries=0)
    made = client.create_droplet(create_body(ssh_keys=[512189],
                                             user_data="x" * (64 * 1024)))
    assert made["status"] == "new" and made["locked"] is True and made["memory"] == 512
    assert client.droplet(made["id"])["status"] == "new"
    assert client.droplet(made["id"])["locked"] is False  # active now


def test_single_page_answers_have_empty_links_and_a_total(fake):
    answer = requests.get(fake.url + "/v2/sizes", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=5).json()
    assert answer["links"] == {} and answer["meta"]["total"] == len(answer["sizes"])
    assert "fra1" in next(s for s in answer["sizes"]
                          if s["slug"] == "s-1vcpu-512mb-10gb")["regions"]
    combined = requests.get(fake.url + "/v2/droplets", params={"tag_name": TAG, "name": "x"},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert combined.status_code == 400


def test_the_401_body_is_the_real_one(fake):
    answer = requests.get(fake.url + "/v2/droplets", headers={"Authorization": "Bearer nope"},
                          timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"id": "Unauthorized", "message": "Unable to authenticate you"}
    assert answer.headers["ratelimit-limit"] == "5000"


def test_a_429_with_only_ratelimit_reset_is_waited_out(fake):
    waits = []
    client = DigitalOcean(TOKEN, fake.url, sleep=waits.append, retry_seconds=0.5)
    fake.rate_limit_next("GET", "/v2/images", reset_in=12)
    assert [i["slug"] for i in client.distribution_images()][:2] == ["debian-12-x64",
                                                                      "debian-13-x64"]
    assert len(waits) == 1 and 10 <= waits[0] <= 12
    fake.rate_limit_next("GET", "/v2/images", reset_in=-30)  # a reset already past
    client.distribution_images()
    assert waits[1] == 0.5  # never a busy loop


def test_an_unknown_ssh_key_fails_before_creating(setup, fake):
    result = setup("cloud", "up", "--ssh-key", "aa:bb:cc")
    assert result.returncode == 1
    assert "aa:bb:cc are not on your DigitalOcean account" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


def test_off_and_archived_droplets_are_listed_costed_and_destroyed(setup, fake):
    now = datetime.now(timezone.utc)
    off = fake.add_droplet(TAG, created_at=now - timedelta(hours=2), status="off")["id"]
    archived = fake.add_droplet(TAG, created_at=now - timedelta(hours=1),
                                status="archive")["id"]
    result = setup("cloud", "status")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert "off" in rows[0] and "$0.0179" in rows[0]  # a droplet that is off still costs
    assert "archive" in rows[1] and " - " in rows[1]  # no address
    down = setup("cloud", "down")
    assert down.returncode == 0 and "destroyed 2 droplet(s)" in down.stdout
    assert not {off, archived} & set(fake.live_ids())


def test_the_droplets_serve_publishes_the_onion_address_cloud_up_printed(tmp_path):
    """Point 2 on the droplet: `serve --onion --clearnet` (the unit's command when [cloud]
    onion is on) with the key where the install script puts it publishes exactly the
    address `up` derived from that key and printed; the password from the environment
    opens /broadcaster over loopback. Real tor, offline (DisableNetwork 1)."""
    from support import Server

    from app.onion.keys import write_key
    key = new_key()
    write_key(tmp_path / "state" / "onion" / "private_key", key)
    server = Server(tmp_path, tmp_path / "stream", extra_config=(
        '[tor]\nmode = "launch"\ntorrc = { DisableNetwork = 1 }\n'))
    environ = {"LIVESTREAM_BROADCASTER_PASSWORD": "pw-from-the-env-file",
               "LIVESTREAM_BROADCASTER_ALLOW_CLEARNET": "false"}
    saved = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)
    try:
        server.start("--onion", "--clearnet")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        hostname = tmp_path / "state" / "onion" / "hostname"
        deadline = time.monotonic() + 30
        while not hostname.exists():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert hostname.read_text().strip() == key.address
        page = server.url + "/broadcaster"
        assert requests.get(page, auth=("broadcaster", "pw-from-the-env-file"),
                            timeout=10).status_code == 200
        assert requests.get(page, auth=("broadcaster", "wrong"), timeout=10).status_code == 401
        assert "pw-from-the-env-file" not in server.log()
    finally:
        server.stop()
