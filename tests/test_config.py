"""Configuration mistakes stop start-up with a message naming the key and the file."""
from __future__ import annotations

import subprocess
import sys

import pytest
from support import PROJECT

from app import config


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_the_documented_defaults():
    loaded = config.load(PROJECT / "config.toml")
    assert loaded.server.port == 8080
    assert loaded.server.host == "127.0.0.1"
    assert loaded.stream_dir == PROJECT / "stream"


def test_every_shipped_key_is_commented():
    lines = (PROJECT / "config.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            before = lines[number - 1].strip()
            assert before.startswith("#") or "=" in before, f"undocumented: {line}"


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "[server]\nprot = 8000\n")
    with pytest.raises(config.ConfigError) as error:
        config.load(path)
    assert "server.prot" in str(error.value) and str(path) in str(error.value)
    assert "port" in str(error.value)  # lists the keys it knows


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, '[server]\nport = "eighty"\n')
    with pytest.raises(config.ConfigError, match=r"server\.port.*wrong type"):
        config.load(path)


def test_unknown_section_and_bad_toml(tmp_path):
    with pytest.raises(config.ConfigError, match=r"unknown section \[sever\]"):
        config.load(write(tmp_path, "[sever]\nport = 1\n"))
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[server\n"))


def test_range_checks(tmp_path):
    with pytest.raises(config.ConfigError, match="server.port"):
        config.load(write(tmp_path, "[server]\nport = 70000\n"))


def test_overrides_from_environment_and_flags(tmp_path):
    path = write(tmp_path, "[server]\nport = 8000\n")
    env = config.environment_overrides({"LIVESTREAM_PORT": "9001", "LIVESTREAM_HOST": "0.0.0.0"})
    loaded = config.load(path, env)
    assert (loaded.server.port, loaded.server.host) == (9001, "0.0.0.0")
    assert config.load(path, {"server.port": 9002}).server.port == 9002
    assert config.load(path).stream_dir == tmp_path / "stream"  # relative to the file


def test_cli_refuses_to_start_with_a_typo(tmp_path):
    path = write(tmp_path, "[stream]\nmemory_segmnets = 3\n")
    result = subprocess.run([sys.executable, "-m", "app.cli", "--config", str(path), "serve"],
                            cwd=PROJECT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "stream.memory_segmnets" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("url", "refused"), [
    ("redis://127.0.0.1:6379/0", False),
    ("redis://localhost/0", False),
    ("redis://[::1]:6379/0", False),
    ("unix:///run/redis/redis.sock", False),
    ("rediss://edge:secret@203.0.113.7:6380/0", False),
    ("redis://203.0.113.7:6379/0", True),
    ("redis://edge:secret@203.0.113.7:6379/0", True),
    ("rediss://203.0.113.7:6380/0", True),
])
def test_a_redis_on_another_machine_needs_a_password_and_tls(url, refused):
    """Redis holds the chat, the bans and the server secret: reached in clear from another
    machine, anyone on the path can read or change them."""
    data = {"store": {"redis_url": url}}
    if refused:
        with pytest.raises(config.ConfigError, match="store.redis_url.*another machine"):
            config.from_dict(data)
        allowed = config.from_dict({"store": {"redis_url": url,
                                              "allow_unprotected_redis": True}})
        assert allowed.store.redis_url == url
    else:
        assert config.from_dict(data).store.redis_url == url
