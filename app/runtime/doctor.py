"""`livestream doctor`: every part this config needs, checked in one run, each problem with
what to do about it. Otherwise each shows up only when its part runs: a missing libass on
the first `play --subs`, a taken port at `serve`, a tor without proof-of-work under attack.

Each check is a small function returning Findings; the command prints them and exits 1 when
any is a problem."""
from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.config import Config

DISK_NEEDED = 2 << 30  # room for segments, the chat store and tor's state


@dataclass(frozen=True)
class Finding:
    part: str
    ok: bool
    said: str  # what was found, and when not ok, what to do


def run_quietly(argv: list[str], timeout: float = 20) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def check_ffmpeg(config: Config) -> Iterator[Finding]:
    if shutil.which("ffmpeg") is None:
        yield Finding("ffmpeg", False, "not installed: sudo apt-get install ffmpeg")
        return
    encoders = run_quietly(["ffmpeg", "-hide_banner", "-encoders"])
    filters = run_quietly(["ffmpeg", "-hide_banner", "-filters"])
    devices = run_quietly(["ffmpeg", "-hide_banner", "-devices"])
    wanted = [(f"{name} encoder", f" {name} " in encoders, why) for name, why in (
        ("libx264", "every source encodes H.264 with it"), ("aac", "the audio of every source"))]
    wanted += [(f"{name} filter", f" {name} " in filters, why) for name, why in (
        ("subtitles", "`play --subs` burns subtitles in with libass"),
        ("drawtext", "stream.sh's CLOCK=1"))]
    wanted += [(f"{name} input", f" {name} " in devices, why) for name, why in (
        ("x11grab", "stream.sh captures the screen with it"),
        ("pulse", "stream.sh captures the sound with it"))]
    for part, present, why in wanted:
        yield Finding(f"ffmpeg {part}", present,
                      "present" if present else f"missing ({why}): install Debian's ffmpeg "
                      "(sudo apt-get install ffmpeg), which has it")


def check_tor(config: Config) -> Iterator[Finding]:
    if shutil.which(config.tor.command) is None:
        needed = config.tor.enabled and config.tor.mode == "launch"
        yield Finding("tor", not needed, "not installed" + (
            ": sudo apt-get install tor ([tor] enabled needs it)" if needed
            else " (only needed for the onion service)"))
        return
    version = run_quietly([config.tor.command, "--version"]).split("\n", 1)[0].strip()
    modules = run_quietly([config.tor.command, "--list-modules"])
    yield Finding("tor", True, version or "present")
    pow_on = "pow: yes" in modules
    yield Finding("tor proof-of-work", pow_on, "the pow module is there: the onion service can "
                  "make floods pay" if pow_on else "this tor has no pow module: the onion service "
                  "cannot ask attackers for proof-of-work. Install tor 0.4.8 or newer "
                  "(Debian 12: bookworm-backports, or the Tor Project's repository)")


def check_fonts(config: Config) -> Iterator[Finding]:
    from app.community.captcha import CaptchaError, find_fonts

    if config.captcha.enabled:
        try:
            yield Finding("captcha font", True, ", ".join(find_fonts(config.captcha.fonts)))
        except CaptchaError as exc:
            yield Finding("captcha font", False, str(exc))
    if shutil.which("fc-list"):
        cjk = bool(run_quietly(["fc-list", ":lang=ja", "family"]).strip())
    else:  # no fontconfig tools: look for the usual CJK font files
        cjk = any(Path("/usr/share/fonts").rglob("*CJK*"))
    yield Finding("CJK subtitle font", cjk, "present" if cjk else
                  "none: Chinese, Japanese and Korean subtitles burn in as empty boxes. "
                  "sudo apt-get install fonts-noto-cjk")


def _port_free(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_ports(config: Config) -> Iterator[Finding]:
    from app.onion.service import listen_host
    from app.sources.rtmp.server import listen_host as ingest_host

    wanted = [("web server", listen_host(config), config.server.port, "--port or [server] port")]
    if config.ingest.enabled:
        wanted.append(("RTMP ingest", ingest_host(config), config.ingest.port, "[ingest] port"))
    for part, host, port, setting in wanted:
        problem = _port_free(host, port)
        yield Finding(f"{part} port", problem is None, f"{host}:{port} is free" if problem is None
                      else f"{host}:{port} is taken ({problem}): is a server already running? "
                      f"Stop it, or pick another with {setting}")


def check_disk(config: Config) -> Iterator[Finding]:
    for part, folder in (("stream folder", config.stream_dir), ("state folder",
                                                                 config.state_dir)):
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        yield Finding(f"disk of the {part}", free >= DISK_NEEDED,
                      f"{free / (1 << 30):.1f} GiB free at {folder}" + (
                          "" if free >= DISK_NEEDED else
                          f": keep at least {DISK_NEEDED >> 30} GiB free, or segments, the chat "
                          "store and tor fail when it fills up"))


def check_permissions(config: Config) -> Iterator[Finding]:
    state = config.state_dir
    if not state.exists():
        yield Finding("state folder", True, f"{state} is made (0700) at the first start")
        return
    loose = []
    for path in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            loose.append(f"{path} ({oct(mode)})")
    yield Finding("state folder permissions", not loose, f"{state}: only its owner can read it"
                  if not loose else "others can read what holds the server secret, the "
                  f"password hash and the onion key: {', '.join(loose[:5])}"
                  f"{' ...' if len(loose) > 5 else ''}. Fix: chmod -R go-rwx {state}")


def check_redis(config: Config) -> Iterator[Finding]:
    if not config.store.redis_url:
        return
    from app.community.shared import RedisConfigError, connect

    try:
        connect(config.store.redis_url).close()
        yield Finding("redis", True, "reachable, and it accepted our credentials")
    except RedisConfigError as exc:
        yield Finding("redis", False, str(exc))


def check_clock(config: Config) -> Iterator[Finding]:
    if shutil.which("timedatectl") is None:
        return
    synced = run_quietly(["timedatectl", "show", "-p", "NTPSynchronized", "--value"]).strip()
    if synced in ("yes", "no"):
        yield Finding("clock", synced == "yes", "synchronized (tor needs the right time)"
                      if synced == "yes" else "not synchronized: tor refuses to work with a "
                      "clock hours off. sudo timedatectl set-ntp true")


CHECKS: list[Callable[[Config], Iterator[Finding]]] = [
    check_ffmpeg, check_tor, check_fonts, check_ports, check_disk, check_permissions,
    check_redis, check_clock]


def run(config: Config, out=print) -> int:
    problems = 0
    for check in CHECKS:
        for finding in check(config):
            problems += not finding.ok
            out(f"{'ok     ' if finding.ok else 'PROBLEM'}  {finding.part}: {finding.said}")
    out(f"{problems} problem{'' if problems == 1 else 's'} found" if problems
        else "everything this config needs is in place")
    return 1 if problems else 0

