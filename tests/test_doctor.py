"""`livestream doctor` on a machine made to have problems: an ffmpeg without libass (a PATH
shim in front of the real one), a taken port and a state folder others can read; and on the
machine `.ci/setup` made, where everything is in place."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from support import free_port, livestream, write_config


def shim_without_libass(folder: Path) -> Path:
    """An `ffmpeg` that is the real one, except that it lists no libass filters."""
    folder.mkdir()
    real = next(Path(p) / "ffmpeg" for p in os.environ["PATH"].split(os.pathsep)
                if (Path(p) / "ffmpeg").is_file())
    shim = folder / "ffmpeg"
    shim.write_text(f"#!/bin/sh\n'{real}' \"$@\" | grep -v -E ' (subtitles|ass) '\n")
    shim.chmod(0o755)
    return folder


def test_doctor_names_each_problem_of_a_broken_machine(tmp_path):
    port = free_port()
    config = write_config(tmp_path, {"server": {"port": port, "host": "127.0.0.1"}})
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim_without_libass(tmp_path / 'bin')}{os.pathsep}"
                                f"{os.environ['PATH']}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        done = livestream(config, "doctor", env=env)
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    problems = [line for line in lines if line.startswith("PROBLEM")]
    assert any("ffmpeg subtitles filter: missing" in line for line in problems), problems
    assert any(f"127.0.0.1:{port} is taken" in line and "--port" in line for line in problems)
    assert any("state folder permissions" in line and "chmod -R go-rwx" in line
               for line in problems)
    assert "ok       ffmpeg libx264 encoder: present" in lines  # what is fine is said so
    assert lines[-1] == f"{len(problems)} problems found"


def test_doctor_passes_where_the_setup_installed_everything(tmp_path):
    config = write_config(tmp_path, {"server": {"port": free_port(), "host": "127.0.0.1"}})
    done = livestream(config, "doctor")
    assert done.returncode == 0, done.stdout
    assert "tor proof-of-work: the pow module is there" in done.stdout
    assert "CJK subtitle font: present" in done.stdout
