"""The droplet's cloud-init user-data: stage 1 of a two-stage deploy, of a fixed size.

DigitalOcean accepts at most 64 KiB of user-data and the project is bigger than that, so
the user-data does not carry the project: it carries a fresh per-droplet deploy key, the
one-shot receiver (receiver.py, standard library only), the environment file, the
systemd units and the install script. At first boot the install script runs the receiver
on the public HTTP port; `livestream cloud up` uploads the project bundle to it, sealed
with the deploy key (stage 2, upload.py); the receiver unpacks it and exits, and the
script installs ffmpeg, tor and python3-venv from the distribution and the Python packages
from PyPI as wheels (nothing is compiled), then starts the services. Nothing in here
depends on the project's size, so adding code never brings the user-data nearer the limit.

The install script is a constant (no values are spliced into it, so the script that was
shellchecked is the script that runs); per-droplet values go into root-only files.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import toml

from app.cloud import receiver
from app.cloud.tunnel import HostKey
from app.runtime import units

USER_DATA_LIMIT = 64 * 1024
PREFIX = "/opt/livestream"
DATA_DIR = "/var/lib/livestream"
ENV_FILE = "/etc/livestream/env"
DEPLOY_KEY_FILE = "/etc/livestream/deploy.key"
REMOTE_COMMAND = "/usr/local/bin/livestream"  # [cloud] remote_command's default
RECEIVER_SOURCE = Path(receiver.__file__).read_text()
SHIPPED_DIRS = ("app", "templates", "static")
SHIPPED_FILES = ("stream.sh", "pyproject.toml", "constraints.txt")
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# the droplet never deploys droplets (the receiver comes in the user-data, not the bundle)
LOCAL_ONLY_DIRS = ("app/cloud/",)

INSTALL_SCRIPT = r"""#!/usr/bin/env bash
# Install livestream on a fresh Debian/Ubuntu droplet, then start the web server and the
# RTMP ingest. Runs once, as root, at first boot. First it receives the project from
# `livestream cloud up` (the one-shot receiver on the public HTTP port, standard library
# only, so it runs on the python3 the image ships for cloud-init), then installs packages.
# LIVESTREAM_OFFLINE=1 (used by the tests) receives and unpacks the bundle, builds the
# virtual environment from the wheels in LIVESTREAM_WHEELS (no index) and writes the
# stream and onion keys: no swap, no apt, no users, no systemd.
set -euo pipefail

prefix="${LIVESTREAM_PREFIX:-/opt/livestream}"
data_dir="${LIVESTREAM_DATA_DIR:-/var/lib/livestream}"
env_file="${LIVESTREAM_ENV_FILE:-/etc/livestream/env}"
key_file="${LIVESTREAM_DEPLOY_KEY_FILE:-/etc/livestream/deploy.key}"
receive_host="${LIVESTREAM_RECEIVE_HOST:-0.0.0.0}"
python="${LIVESTREAM_PYTHON:-python3}"
offline="${LIVESTREAM_OFFLINE:-0}"
wheels="${LIVESTREAM_WHEELS:-}"

say() { echo "livestream-install: $*"; }
setting() { sed -n "s/^$1=//p" "$env_file"; }

receive_bundle() {
  local port timeout
  port="$(setting LIVESTREAM_PORT)"
  timeout="$(setting LIVESTREAM_RECEIVE_TIMEOUT)"
  say "waiting for livestream cloud up to upload the project (port ${port:-80})"
  rm -rf "$prefix/src"
  "$python" "$prefix/receiver.py" --key-file "$key_file" --dest "$prefix/src" \
    --host "$receive_host" --port "${port:-80}" --timeout "${timeout:-900}"
  rm -f "$key_file"  # it has done its job
}

make_swap() {
  # a 512 MB droplet has no swap: a swap file keeps apt and a transcoding ingest from
  # meeting the OOM killer (docs/benchmarks.md, "Cloud droplet memory")
  local mib
  mib="$(setting LIVESTREAM_SWAP_MIB)"
  [ "${mib:-0}" -gt 0 ] || return 0
  if [ -n "$(swapon --show=NAME --noheadings)" ]; then return 0; fi
  say "adding ${mib} MiB of swap"
  fallocate -l "${mib}M" /swapfile || dd if=/dev/zero of=/swapfile bs=1M count="$mib"
  chmod 600 /swapfile
  mkswap /swapfile >/dev/null
  swapon /swapfile
  echo '/swapfile none swap sw 0 0' >>/etc/fstab
  sysctl -q vm.swappiness=10
}

install_system_packages() {
  say "installing ffmpeg, tor and python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    ffmpeg tor python3-venv ca-certificates
  # the tor package starts a system tor; livestream serve launches its own for the onion
  # service, so the system one would only take memory
  systemctl disable --now tor.service >/dev/null 2>&1 || true
}

make_virtualenv() {
  say "creating the virtual environment in $prefix/venv"
  # the versions the tests passed with (constraints.txt), from PyPI or, offline, from a
  # folder of wheels and nothing else
  "$python" -m venv "$prefix/venv"
  if [ "$offline" = 1 ]; then
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index \
      --find-links "$wheels" -c "$prefix/src/constraints.txt" \
      -r "$prefix/src/requirements.txt"
  else
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check \
      --prefer-binary -c "$prefix/src/constraints.txt" -r "$prefix/src/requirements.txt"
  fi
}

create_service_user() {
  id -u livestream >/dev/null 2>&1 ||
    useradd --system --home-dir "$data_dir" --shell /usr/sbin/nologin livestream
  install -d -o livestream -g livestream -m 0750 "$data_dir" "$data_dir/stream" "$data_dir/state"
}

seed_stream_key() {
  # the RTMP ingest keeps its key in the state folder: use the one `cloud up` printed
  local key
  key="$(setting LIVESTREAM_STREAM_KEY)"
  [ -n "$key" ] || return 0
  mkdir -p "$data_dir/state"
  (umask 077 && printf '%s\n' "$key" >"$data_dir/state/ingest.key")
  if [ "$offline" != 1 ]; then
    chown livestream:livestream "$data_dir/state/ingest.key"
  fi
}

seed_onion_key() {
  # the onion key `cloud up` made (it printed the address): into the state folder, owner
  # only, and out of the environment file, so the services never see it there
  local key
  key="$(setting LIVESTREAM_ONION_KEY)"
  [ -n "$key" ] || return 0
  mkdir -p "$data_dir/state"
  install -d -m 0700 "$data_dir/state/onion"
  (umask 077 && printf '%s\n' "$key" >"$data_dir/state/onion/private_key")
  sed -i '/^LIVESTREAM_ONION_KEY=/d' "$env_file"
  if [ "$offline" != 1 ]; then
    chown -R livestream:livestream "$data_dir/state/onion"
  fi
}

start_services() {
  say "starting livestream-serve and livestream-ingest"
  systemctl daemon-reload
  systemctl enable --now livestream-serve.service livestream-ingest.service
}

main() {
  if [ "$offline" != 1 ]; then
    make_swap
  fi
  receive_bundle
  if [ "$offline" = 1 ]; then
    make_virtualenv
    seed_stream_key
    seed_onion_key
  else
    install_system_packages
    make_virtualenv
    create_service_user
    seed_stream_key
    seed_onion_key
    start_services
  fi
  say "done"
}

main "$@"
"""


# What `cloud play` runs over SSH (as root) to follow the party it plays: livestream as the
# service runs it, with its user, settings and folders.
REMOTE_WRAPPER = f"""#!/bin/sh
# livestream as the livestream-serve service runs it: its user, settings and folders
set -eu
set -a
# shellcheck source=/dev/null
. {ENV_FILE}
set +a
cd {PREFIX}/src
exec runuser -u livestream -- {PREFIX}/venv/bin/python -m app.cli \\
  --config {PREFIX}/src/config.toml "$@"
"""


@dataclass(frozen=True)
class DropletSettings:
    """Per-droplet values; the stream key and the deploy key (hex) are secrets."""
    stream_key: str = field(repr=False)
    deploy_key: str = field(repr=False)
    http_port: int = 80
    ingest_port: int = 1935
    ingest_args: str = "ingest --host {host} --port {port}"
    in_clear: bool = False  # the ingest listens on the public address (else loopback: SSH)
    host_key: HostKey | None = field(default=None, repr=False)  # the droplet's, made by `up`
    receive_timeout: float = 900.0
    broadcaster_password: str = field(default="", repr=False)  # made by `cloud up`, shown once
    onion_key: str = field(default="", repr=False)  # ED25519-V3:..., moved to the state folder
    onion: bool = False  # serve also publishes the onion service (its own tor)
    swap_mib: int = 0


def requirements(pyproject: Path) -> str:
    """requirements.txt from pyproject's dependencies: the droplet installs only wheels."""
    deps = toml.load(pyproject)["project"]["dependencies"]
    return "".join(f"{dep}\n" for dep in deps)


def bundle(project_dir: Path, config_file: Path) -> bytes:
    """The project as a gzipped tar, reproducible (sorted, fixed times and owners).

    The config file in use goes in as config.toml so the droplet runs with the same settings
    (host, port and folders are overridden there through the environment).
    """
    members: list[tuple[str, bytes, int]] = []
    for name in SHIPPED_DIRS:
        for path in sorted((project_dir / name).rglob("*")):
            name_in_tar = path.relative_to(project_dir).as_posix()
            if not path.is_file() or "__pycache__" in path.parts \
                    or name_in_tar.startswith(LOCAL_ONLY_DIRS) \
                    or path.name.endswith(SKIPPED_SUFFIXES):
                continue
            members.append((name_in_tar, path.read_bytes(), 0o644))
    for name in SHIPPED_FILES:
        path = project_dir / name
        members.append((name, path.read_bytes(), 0o755 if path.stat().st_mode & 0o100 else 0o644))
    members.append(("config.toml", Path(config_file).read_bytes(), 0o644))
    members.append(("requirements.txt",
                    requirements(project_dir / "pyproject.toml").encode(), 0o644))
    members.append(("README.md", b"livestream, deployed by `livestream cloud up`.\n", 0o644))

    raw = io.BytesIO()
    # mtime=0 in the gzip header too: the same project gives byte-for-byte the same bundle
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data, mode in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def environment(settings: DropletSettings) -> str:
    """The environment file (root-only): where to listen, where to write, the stream key,
    and how long the receiver waits for the bundle."""
    pairs = [
        ("LIVESTREAM_HOST", "0.0.0.0"),
        ("LIVESTREAM_PORT", settings.http_port),
        ("LIVESTREAM_STREAM_DIR", f"{DATA_DIR}/stream"),
        ("LIVESTREAM_STATE_DIR", f"{DATA_DIR}/state"),
        ("LIVESTREAM_STREAM_KEY", settings.stream_key),
        ("LIVESTREAM_RECEIVE_TIMEOUT", round(settings.receive_timeout)),
        ("LIVESTREAM_SWAP_MIB", settings.swap_mib),
        # the droplet serves plain HTTP on the internet: /broadcaster only over loopback
        # (the onion service, an SSH tunnel)
        ("LIVESTREAM_BROADCASTER_ALLOW_CLEARNET", "false"),
    ]
    if settings.broadcaster_password:
        pairs.append(("LIVESTREAM_BROADCASTER_PASSWORD", settings.broadcaster_password))
    if settings.onion_key:
        pairs.append(("LIVESTREAM_ONION_KEY", settings.onion_key))
    return "".join(f"{key}={value}\n" for key, value in pairs)


def unit(description: str, livestream_args: str, low_port: bool) -> str:
    """The hardened service (app/runtime/units.py, shared with `livestream service`) running
    `livestream ARGS` from the unpacked project."""
    return units.render(units.Unit(
        description=description, environment_file=ENV_FILE,
        working_directory=f"{PREFIX}/src", writable=[DATA_DIR], low_port=low_port,
        exec_start=(f"{PREFIX}/venv/bin/python -m app.cli --config {PREFIX}/src/config.toml "
                    f"{livestream_args}")))


def ingest_args(settings: DropletSettings) -> str:
    """The ingest finds the key in its state folder (the install script puts it there); an
    ingest that takes it as an argument gets {key}, which systemd expands from the
    EnvironmentFile, so the key stays out of the world-readable unit file."""
    return settings.ingest_args.format(port=settings.ingest_port,
                                       host="0.0.0.0" if settings.in_clear else "127.0.0.1",
                                       key="${LIVESTREAM_STREAM_KEY}")


def render(settings: DropletSettings) -> str:
    """The #cloud-config document. Its size does not depend on the project; raises
    ValueError if the fixed parts ever outgrow the 64 KiB limit."""
    files = [
        (ENV_FILE, "0600", environment(settings)),
        (DEPLOY_KEY_FILE, "0600", settings.deploy_key + "\n"),
        ("/etc/systemd/system/livestream-serve.service", "0644",
         unit("livestream web server", "serve --onion --clearnet" if settings.onion
              else "serve", low_port=settings.http_port < 1024)),
        ("/etc/systemd/system/livestream-ingest.service", "0644",
         unit("livestream RTMP ingest", ingest_args(settings),
              low_port=settings.ingest_port < 1024)),
        (f"{PREFIX}/receiver.py", "0644", RECEIVER_SOURCE),
        (f"{PREFIX}/install.sh", "0755", INSTALL_SCRIPT),
        (REMOTE_COMMAND, "0755", REMOTE_WRAPPER),
    ]
    out = ["#cloud-config"]
    if settings.host_key is not None:
        # cloud-init installs this as the SSH host key: `up` pinned it before the droplet
        # existed (tunnel.py); the other key types it would make are not offered to us
        out += ["ssh_keys:", "  ed25519_private: |"]
        out += [f"    {line}" for line in settings.host_key.private.strip().split("\n")]
        out += [f"  ed25519_public: {settings.host_key.public}"]
    out.append("write_files:")
    for path, permissions, content in files:
        out.append(f"  - path: {path}")
        out.append(f"    permissions: '{permissions}'")
        out.append("    content: |")
        out.extend(f"      {line}" if line else "" for line in content.split("\n")[:-1])
    out += ["runcmd:", f"  - [bash, {PREFIX}/install.sh]", ""]
    user_data = "\n".join(out)
    size = len(user_data.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(
            f"the droplet's user-data is {size} bytes, over DigitalOcean's {USER_DATA_LIMIT}-byte "
            "limit; the receiver or the install script has grown too big.")
    return user_data
