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
