"""`livestream service`: the unit files it writes, and the droplet's, which share them, pass
`systemd-analyze verify`; their sandbox is scored by `systemd-analyze security` (offline)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import livestream, write_config

from app.config import load
from app.runtime import service

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze (Debian's systemd)")


def verify(*units: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=units[0].parent)


def exposure(unit: Path) -> float:
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    return float(re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout).group(1))


def test_user_units_written_by_the_command_pass_verify(tmp_path):
    config = write_config(tmp_path)
    units = tmp_path / "units"
    done = livestream(config, "service", "install", "--user", "--ingest", "--no-start",
                      "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    written = sorted(units.iterdir())
    assert [p.name for p in written] == ["livestream-ingest.service", "livestream-serve.service"]
    checked = verify(*written)
    assert checked.returncode == 0, checked.stderr
    text = (units / "livestream-serve.service").read_text()
    state = load(config)
    assert f"ReadWritePaths={state.state_dir} {state.stream_dir}" in text
    assert "ProtectSystem=strict" in text and "UMask=0077" in text and "MemoryMax=" in text
    print(f"\n--user serve unit: exposure {exposure(units / 'livestream-serve.service')}")
    removed = livestream(config, "service", "uninstall", "--user", "--ingest",
                         "--unit-dir", str(units))
    assert removed.returncode == 0 and not list(units.iterdir())


def test_system_units_run_as_a_dedicated_user_and_score_well(tmp_path):
    config = load(write_config(tmp_path, {"server": {"port": 80}}))
    unit = tmp_path / "livestream-serve.service"
    unit.write_text(service.render(config, "serve", user_mode=False))
    checked = verify(unit)
    assert checked.returncode == 0, checked.stderr
    text = unit.read_text()
    assert "User=livestream" in text and "NoNewPrivileges=yes" in text
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in text  # port 80, nothing more
    score = exposure(unit)
    print(f"\nsystem serve unit: exposure {score}")
    assert score <= 2.0, "the sandbox got weaker: see docs/reliability.md"


def test_the_droplet_shares_the_same_hardening(tmp_path):
    from app.cloud import user_data

    text = user_data.unit("livestream web server", "serve", low_port=True)
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "SystemCallFilter=@system-service",
                 "UMask=0077", "MemoryMax="):
        assert line in text, line
    unit = tmp_path / "droplet.service"
    unit.write_text(text)
    assert exposure(unit) <= 2.0
