"""`livestream service install|uninstall|status`: this checkout as systemd services that start
at boot, restart on failure and log to the journal, sandboxed as app/runtime/units.py says.

System services (the default, as root) run as a dedicated unprivileged user, `livestream`,
which owns the state and stream folders; `--user` services run under the user's own manager
(`loginctl enable-linger USER` makes them start at boot without a login). An edge is the
`serve` service with `[relay] origin` in its config."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from app.config import DEFAULT_CONFIG, PROJECT_DIR, Config
from app.runtime import units

SERVICE_USER = "livestream"
KINDS = {"serve": ("livestream web server", "serve"),
         "ingest": ("livestream RTMP ingest", "ingest")}


class ServiceError(Exception):
    """The services could not be installed or removed; the text says what to do."""


def unit_name(kind: str) -> str:
    return f"livestream-{kind}.service"


def default_unit_dir(user_mode: bool) -> Path:
    if user_mode:
        return Path.home() / ".config" / "systemd" / "user"
    return Path("/etc/systemd/system")


def render(config: Config, kind: str, user_mode: bool) -> str:
    description, args = KINDS[kind]
    config_file = Path(config.source or DEFAULT_CONFIG).resolve()
    port = config.server.port if kind == "serve" else config.ingest.port
    # a checkout in a home folder (the invoking user's, or under the folder homes live in)
    homes = (Path.home(), Path.home().parent)
    home = any(PROJECT_DIR.is_relative_to(folder) for folder in homes if folder != Path("/"))
    return units.render(units.Unit(
        description=description,
        exec_start=f"{sys.executable} -m app.cli --config {config_file} {args}",
        working_directory=str(PROJECT_DIR),
        writable=[str(config.state_dir), str(config.stream_dir)],
        user=None if user_mode else SERVICE_USER, low_port=port < 1024 and not user_mode,
        home_read_only=home or user_mode,
        wanted_by="default.target" if user_mode else "multi-user.target"))


def _unreachable_for_others(path: Path) -> Path | None:
    """The first folder above `path` that a user other than its owner cannot enter."""
    for folder in [*reversed(path.parents), path]:
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def install(config: Config, kinds: list[str], user_mode: bool, unit_dir: Path | None,
            start: bool, out=print) -> None:
    unit_dir = unit_dir or default_unit_dir(user_mode)
    if not user_mode:
        if start and os.geteuid() != 0:
            raise ServiceError("system services need root: run `sudo .venv/bin/livestream "
                               "service install`, or `livestream service install --user`")
        blocked = _unreachable_for_others(PROJECT_DIR)
        if blocked is not None:
            raise ServiceError(f"the {SERVICE_USER} user cannot reach this checkout: {blocked} "
                               "is closed to other users. Move the checkout to a shared place "
                               "such as /opt/livestream, or use --user")
    unit_dir.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        path = unit_dir / unit_name(kind)
        path.write_text(render(config, kind, user_mode))
        path.chmod(0o644)
        out(f"wrote {path}")
    if not start:
        return
    if not user_mode:
        _service_user(config)
    systemctl = ["systemctl", "--user"] if user_mode else ["systemctl"]
    _run([*systemctl, "daemon-reload"])
    _run([*systemctl, "enable", "--now", *(unit_name(k) for k in kinds)])
    out("started; logs: journalctl " + ("--user " if user_mode else "") + "-u livestream-serve")


def _service_user(config: Config) -> None:
    """The dedicated user, made once, owning the state and stream folders."""
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--home-dir", str(config.state_dir),
              "--shell", "/usr/sbin/nologin", SERVICE_USER])
    for folder in (config.state_dir, config.stream_dir):
        folder.mkdir(parents=True, exist_ok=True)
        _run(["chown", "-R", f"{SERVICE_USER}:{SERVICE_USER}", str(folder)])


def uninstall(kinds: list[str], user_mode: bool, unit_dir: Path | None, out=print) -> None:
    unit_dir = unit_dir or default_unit_dir(user_mode)
    systemctl = ["systemctl", "--user"] if user_mode else ["systemctl"]
    if shutil.which("systemctl"):
        subprocess.run([*systemctl, "disable", "--now", *(unit_name(k) for k in kinds)],
                       check=False, capture_output=True)
    for kind in kinds:
        path = unit_dir / unit_name(kind)
        if path.exists():
            path.unlink()
            out(f"removed {path}")
    if shutil.which("systemctl"):
        subprocess.run([*systemctl, "daemon-reload"], check=False, capture_output=True)


def status(kinds: list[str], user_mode: bool, out=print) -> int:
    systemctl = ["systemctl", "--user"] if user_mode else ["systemctl"]
    worst = 0
    for kind in kinds:
        done = subprocess.run([*systemctl, "is-active", unit_name(kind)], check=False,
                              capture_output=True, text=True)
        state = done.stdout.strip() or done.stderr.strip() or "unknown"
        out(f"{unit_name(kind)}: {state}")
        worst = max(worst, 0 if state == "active" else 3)
    return worst


def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise ServiceError(f"{argv[0]} is not here: systemd services need a systemd machine")
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout}")
