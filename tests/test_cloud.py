"""`livestream cloud` against a faithful fake DigitalOcean API on loopback.

The fake reports the droplet's public address as 127.0.0.1 and [cloud] http_port points the
health check at a real `livestream serve` started here, so `up` waits for a real server.
`play` pushes with a tiny stand-in for `livestream play` ([cloud] push_command).
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import toml
import yaml
from fake_digitalocean import FakeDigitalOcean

from app import cloud_init
from app.cloud import CloudError, read_token
from app.config import PROJECT_DIR
from app.digitalocean import ApiError, DigitalOcean

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A real livestream server: the 'droplet' the health check reaches."""
    base = tmp_path_factory.mktemp("web")
    cfg = base / "config.toml"
    cfg.write_text(f'[server]\nstate_dir = "{base / "state"}"\n[stream]\ndir = "{base / "s"}"\n')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--config", str(cfg), "serve",
                             "--port", str(port)], cwd=PROJECT_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def fake():
    server = FakeDigitalOcean(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path, fake, web):
    """A config pointing at the fake API and the real server; returns a CLI runner."""
    marker = tmp_path / "pushed.txt"
    push = tmp_path / "fake_push.py"
    push.write_text(FAKE_PUSH)

    def write_config(**cloud):
        settings = {
            "api_url": fake.url, "tag": TAG, "region": "fra1", "http_port": web,
            "poll_interval": 0.05, "ready_timeout": 15.0, "retry_seconds": 0.01,
            "push_command": f"{sys.executable} {push} {{file}} {{url}}",
        }
        settings.update(cloud)
        data = {"server": {"state_dir": str(tmp_path / "state")},
                "stream": {"dir": str(tmp_path / "stream")}, "cloud": settings}
        cfg = tmp_path / "config.toml"
        cfg.write_text(toml.dumps(data))
        return cfg

    def run(*args, token=TOKEN, env=None, config=None, timeout=60, **cloud):
        cfg = config or write_config(**cloud)
        environ = {k: v for k, v in os.environ.items() if k != "DIGITALOCEAN_TOKEN"}
        if token:
            environ["DIGITALOCEAN_TOKEN"] = token
        environ.update(PUSH_MARKER=str(marker), **(env or {}))
        return subprocess.run([sys.executable, "-m", "app.cli", "--config", str(cfg),
                               "--log-level", "debug", *args], cwd=PROJECT_DIR, env=environ,
                              capture_output=True, text=True, timeout=timeout, check=False)

    run.marker = marker
    run.write_config = write_config
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

def test_up_creates_one_tagged_droplet_waits_and_prints_urls(setup, fake, web):
    result = setup("cloud", "up")
    assert result.returncode == 0, result.stderr
    assert_no_token(result)
    assert fake.count("POST", "/v2/droplets") == 1
    body = fake.created_bodies[0]
    # cheapest size *offered in fra1* (the fake's cheaper 512 MB one is not)
    assert (body["size"], body["region"], body["tags"]) == ("s-1vcpu-1gb", "fra1", [TAG])
    key = stream_key_of(body)
    assert len(key) >= 20
    out = result.stdout
    assert "droplet is new" in out  # visible progress while it boots
    assert f"watch at http://127.0.0.1:{web}/" in out
    assert f"rtmp://127.0.0.1/live/{key}" in out
    assert "$0.00893 per started hour" in out
    (droplet_id,) = fake.live_ids(TAG)
    assert fake.droplets[droplet_id]["status"] == "active"


def test_up_refuses_a_second_droplet_unless_asked(setup, fake):
    fake.add_droplet(TAG)
    refused = setup("cloud", "up")
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--another" in refused.stderr
    assert fake.count("POST", "/v2/droplets") == 0
    allowed = setup("cloud", "up", "--another")
    assert allowed.returncode == 0, allowed.stderr
    assert len(fake.live_ids(TAG)) == 2


def test_up_destroys_the_droplet_when_the_server_never_answers(setup, fake):
    result = setup("cloud", "up", http_port=free_port(), ready_timeout=1.0)
    assert result.returncode == 1
    assert "did not answer" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 1
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
    assert "$0.0179" in row  # two started hours x $0.00893


# ---- play ----------------------------------------------------------------------------------

@pytest.fixture
def movie(tmp_path):
    path = tmp_path / "movie.mp4"
    path.write_bytes(b"not really a movie; the fake push does not read it")
    return path


def test_play_pushes_the_file_then_destroys_the_droplet(setup, fake, movie):
    result = setup("cloud", "play", str(movie), "--subs", "1")
    assert result.returncode == 0, result.stderr
    argv, _ = setup.marker.read_text().splitlines()
    key = stream_key_of(fake.created_bodies[0])
    assert argv == f"{movie} rtmp://127.0.0.1/live/{key} --subs 1"
    assert fake.count("DELETE", "/v2/droplets/") == 1
    assert fake.live_ids() == []
    assert_no_token(result)


def test_play_destroys_the_droplet_when_the_push_fails(setup, fake, movie):
    result = setup("cloud", "play", str(movie), env={"PUSH_MODE": "fail"})
    assert result.returncode == 3
    assert setup.marker.exists()
    assert fake.count("DELETE", "/v2/droplets/") == 1 and fake.live_ids() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_play_destroys_the_droplet_on_interrupt(setup, fake, movie, tmp_path, sig):
    cfg = setup.write_config()
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


def test_play_of_a_missing_file_creates_nothing(setup, fake, tmp_path):
    result = setup("cloud", "play", str(tmp_path / "nope.mp4"))
    assert result.returncode == 1 and "no such file" in result.stderr
    assert fake.count("POST", "/v2/droplets") == 0


def test_default_push_command_is_livestream_play(fake):
    from app.cloud import Cloud
    from app.config import load

    config = load(PROJECT_DIR / "config.toml")
    argv = Cloud(DigitalOcean(TOKEN, fake.url), config).push_argv(
        "film.mkv", "rtmp://203.0.113.5/live/KEY", "subs.srt")
    assert argv[1:3] == ["-m", "app.cli"]
    assert argv[-6:] == ["play", "film.mkv", "--to", "rtmp://203.0.113.5/live/KEY",
                         "--subs", "subs.srt"]


# ---- the cloud-init user-data ----------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered():
    bundle = cloud_init.bundle(PROJECT_DIR, PROJECT_DIR / "config.toml")
    settings = cloud_init.DropletSettings(stream_key="k3y-Secret_value")
    return bundle, cloud_init.render(bundle, settings)


def test_user_data_is_valid_cloud_config_under_the_limit(rendered):
    bundle, user_data = rendered
    assert user_data.startswith("#cloud-config\n")
    assert len(user_data.encode()) < cloud_init.USER_DATA_LIMIT
    doc = yaml.safe_load(user_data)
    files = {f["path"]: f for f in doc["write_files"]}
    assert base64.b64decode(files[f"{cloud_init.PREFIX}/bundle.tar.gz"]["content"]) == bundle
    assert files[f"{cloud_init.PREFIX}/install.sh"]["content"] == cloud_init.INSTALL_SCRIPT
    assert files[cloud_init.ENV_FILE]["permissions"] == "0600"
    assert "LIVESTREAM_STREAM_KEY=k3y-Secret_value\n" in files[cloud_init.ENV_FILE]["content"]
    assert "LIVESTREAM_PORT=80\n" in files[cloud_init.ENV_FILE]["content"]
    serve = files["/etc/systemd/system/livestream-serve.service"]["content"]
    ingest = files["/etc/systemd/system/livestream-ingest.service"]["content"]
    assert serve.rstrip().endswith("WantedBy=multi-user.target")
    assert re.search(r"^ExecStart=\S+/venv/bin/python -m app.cli --config \S+ serve$", serve,
                     re.MULTILINE)
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in serve  # port 80 without root
    assert re.search(r"^ExecStart=.* ingest --host 0.0.0.0 --port 1935$", ingest, re.MULTILINE)
    assert "k3y-Secret_value" not in ingest  # the key stays in the root-only env file
    assert doc["runcmd"] == [["bash", f"{cloud_init.PREFIX}/install.sh"]]


def test_a_key_placeholder_in_ingest_args_is_expanded_by_systemd_not_by_us():
    settings = cloud_init.DropletSettings(stream_key="k3y-Secret_value",
                                          ingest_args="ingest --port {port} --key {key}")
    args = cloud_init.ingest_args(settings)
    assert args == "ingest --port 1935 --key ${LIVESTREAM_STREAM_KEY}"


def test_install_script_uses_distribution_packages_and_wheels():
    script = cloud_init.INSTALL_SCRIPT
    assert re.search(r"apt-get .*install .*\n?.*ffmpeg tor python3-venv", script)
    assert "--prefer-binary -r" in script and "requirements.txt" in script
    assert "systemctl enable --now livestream-serve.service livestream-ingest.service" in script


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (.ci/setup --test installs it)")
def test_install_script_is_shellcheck_clean(tmp_path):
    script = tmp_path / "install.sh"
    script.write_text(cloud_init.INSTALL_SCRIPT)
    result = subprocess.run(["shellcheck", "--severity=style", str(script)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_bundle_is_reproducible_and_holds_what_the_droplet_runs(rendered):
    bundle, _ = rendered
    assert cloud_init.bundle(PROJECT_DIR, PROJECT_DIR / "config.toml") == bundle
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        names = tar.getnames()
        requirements = tar.extractfile("requirements.txt").read().decode()
    for needed in ("app/cli.py", "app/__init__.py", "templates/index.html", "static/style.css",
                   "config.toml", "pyproject.toml", "requirements.txt", "stream.sh"):
        assert needed in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "app/cloud.py" not in names  # the droplet does not deploy droplets
    deps = toml.load(PROJECT_DIR / "pyproject.toml")["project"]["dependencies"]
    assert requirements.splitlines() == deps


def test_too_big_a_bundle_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="over DigitalOcean's 65536-byte limit"):
        cloud_init.render(os.urandom(50_000), cloud_init.DropletSettings(stream_key="k"))


def test_compacting_keeps_the_program_and_drops_docstrings(tmp_path):
    source = '"""Module doc."""\n# comment\ndef f(x):\n    """Doc."""\n    return x + 1\n'
    compact = cloud_init.compact_python(source, "m.py")
    assert "doc" not in compact.lower() and "comment" not in compact
    (tmp_path / "compacted.py").write_text(compact)
    run = subprocess.run([sys.executable, "-c", "import compacted; print(compacted.f(41))"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert run.stdout.strip() == "42", run.stderr


def test_the_install_script_builds_a_venv_that_serves_the_bundle(rendered, tmp_path):
    """The droplet's install, run here as far as this machine allows: unpack the same bundle,
    build a fresh virtual environment from the same requirements (offline, from the packages
    already installed), then start the server exactly as the systemd unit does."""
    _bundle, user_data = rendered
    files = {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "bundle.tar.gz").write_bytes(
        base64.b64decode(files[f"{cloud_init.PREFIX}/bundle.tar.gz"]["content"]))
    script = tmp_path / "install.sh"
    script.write_text(files[f"{cloud_init.PREFIX}/install.sh"]["content"])
    env_file = tmp_path / "env"
    env_file.write_text(files[cloud_init.ENV_FILE]["content"])
    data = tmp_path / "data"
    env = dict(os.environ, LIVESTREAM_OFFLINE="1", LIVESTREAM_PREFIX=str(prefix),
               LIVESTREAM_PYTHON=sys.executable, LIVESTREAM_ENV_FILE=str(env_file),
               LIVESTREAM_DATA_DIR=str(data))
    install = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "livestream-install: done" in install.stdout
    python = prefix / "venv" / "bin" / "python"
    assert python.exists()
    key_file = data / "state" / "ingest.key"  # where the RTMP ingest looks for its key
    assert key_file.read_text() == "k3y-Secret_value\n"
    assert key_file.stat().st_mode & 0o777 == 0o600

    port = free_port()
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
