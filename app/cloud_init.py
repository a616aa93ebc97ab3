"""The droplet's cloud-init user-data: the project itself, an install script, two services.

Deploying needs nothing published anywhere: the project's source travels inside the
user-data as a gzipped tar (DigitalOcean accepts up to 64 KiB of user-data, checked here).
At first boot cloud-init writes the files and runs the install script, which takes ffmpeg,
tor and python3-venv from the distribution and the Python packages from PyPI as wheels, so
nothing is compiled and the droplet is ready in about two minutes.

The install script is a constant (no values are spliced into it, so the script that was
shellchecked is the script that runs); per-droplet values go into an environment file.
"""
from __future__ import annotations

import ast
import base64
import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import toml

USER_DATA_LIMIT = 64 * 1024
PREFIX = "/opt/livestream"
DATA_DIR = "/var/lib/livestream"
ENV_FILE = "/etc/livestream/env"
SHIPPED_DIRS = ("app", "templates", "static")
SHIPPED_FILES = ("stream.sh", "pyproject.toml")
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# the droplet never deploys droplets: leaving these out keeps room under the 64 KiB limit
LOCAL_ONLY = {"app/cloud.py", "app/cloud_init.py", "app/digitalocean.py", "app/estimate.py"}

INSTALL_SCRIPT = r"""#!/usr/bin/env bash
# Install livestream on a fresh Debian/Ubuntu droplet from the bundle cloud-init wrote,
# then start the web server and the RTMP ingest. Runs once, as root, at first boot.
# LIVESTREAM_OFFLINE=1 (used by the tests) only unpacks the bundle, builds the virtual
# environment from already installed packages and writes the stream key: no apt, no users,
# no systemd.
set -euo pipefail

prefix="${LIVESTREAM_PREFIX:-/opt/livestream}"
data_dir="${LIVESTREAM_DATA_DIR:-/var/lib/livestream}"
env_file="${LIVESTREAM_ENV_FILE:-/etc/livestream/env}"
python="${LIVESTREAM_PYTHON:-python3}"
offline="${LIVESTREAM_OFFLINE:-0}"

say() { echo "livestream-install: $*"; }

install_system_packages() {
  say "installing ffmpeg, tor and python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    ffmpeg tor python3-venv ca-certificates
}

unpack_bundle() {
  say "unpacking the project into $prefix/src"
  rm -rf "$prefix/src"
  mkdir -p "$prefix/src"
  tar -xzf "$prefix/bundle.tar.gz" -C "$prefix/src"
}

make_virtualenv() {
  say "creating the virtual environment in $prefix/venv"
  if [ "$offline" = 1 ]; then
    "$python" -m venv --system-site-packages "$prefix/venv"
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index \
      -r "$prefix/src/requirements.txt"
  else
    "$python" -m venv "$prefix/venv"
    "$prefix/venv/bin/python" -m pip install -q --disable-pip-version-check \
      --prefer-binary -r "$prefix/src/requirements.txt"
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
  key="$(sed -n 's/^LIVESTREAM_STREAM_KEY=//p' "$env_file")"
  [ -n "$key" ] || return 0
  mkdir -p "$data_dir/state"
  (umask 077 && printf '%s\n' "$key" >"$data_dir/state/ingest.key")
  if [ "$offline" != 1 ]; then
    chown livestream:livestream "$data_dir/state/ingest.key"
  fi
}

start_services() {
  say "starting livestream-serve and livestream-ingest"
  systemctl daemon-reload
  systemctl enable --now livestream-serve.service livestream-ingest.service
}

main() {
  if [ "$offline" = 1 ]; then
    unpack_bundle
    make_virtualenv
    seed_stream_key
  else
    install_system_packages
    unpack_bundle
    make_virtualenv
    create_service_user
    seed_stream_key
    start_services
  fi
  say "done"
}

main "$@"
"""


@dataclass(frozen=True)
class DropletSettings:
    """Per-droplet values the services need; the stream key is a secret."""
    stream_key: str
    http_port: int = 80
    ingest_port: int = 1935
    ingest_args: str = "ingest --host 0.0.0.0 --port {port}"


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
            if not path.is_file() or "__pycache__" in path.parts or name_in_tar in LOCAL_ONLY \
                    or path.name.endswith(SKIPPED_SUFFIXES):
                continue
            data = path.read_bytes()
            if path.suffix == ".py":
                data = compact_python(data.decode(), name_in_tar).encode()
            members.append((name_in_tar, data, 0o644))
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


def compact_python(source: str, name: str) -> str:
    """The same program without comments and docstrings (about a fifth smaller).

    Going through the syntax tree cannot change what the code does, unlike a text filter.
    """
    tree = ast.parse(source, filename=name)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def environment(settings: DropletSettings) -> str:
    """The services' environment file (root-only): where to listen, where to write, the key."""
    return "".join(f"{key}={value}\n" for key, value in (
        ("LIVESTREAM_HOST", "0.0.0.0"),
        ("LIVESTREAM_PORT", settings.http_port),
        ("LIVESTREAM_STREAM_DIR", f"{DATA_DIR}/stream"),
        ("LIVESTREAM_STATE_DIR", f"{DATA_DIR}/state"),
        ("LIVESTREAM_STREAM_KEY", settings.stream_key),
    ))


def unit(description: str, livestream_args: str, low_port: bool) -> str:
    """A hardened systemd service running `livestream ARGS` from the unpacked project."""
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "User=livestream",
        f"EnvironmentFile={ENV_FILE}",
        f"WorkingDirectory={PREFIX}/src",
        (f"ExecStart={PREFIX}/venv/bin/python -m app.cli --config {PREFIX}/src/config.toml "
        f"{livestream_args}"),
        "Restart=on-failure",
        "RestartSec=2",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        f"ReadWritePaths={DATA_DIR}",
    ]
    if low_port:
        lines.append("AmbientCapabilities=CAP_NET_BIND_SERVICE")
    lines += ["", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"


def ingest_args(settings: DropletSettings) -> str:
    """The ingest finds the key in its state folder (the install script puts it there); an
    ingest that takes it as an argument gets {key}, which systemd expands from the
    EnvironmentFile, so the key stays out of the world-readable unit file."""
    return settings.ingest_args.format(port=settings.ingest_port,
                                       key="${LIVESTREAM_STREAM_KEY}")


def render(bundle_bytes: bytes, settings: DropletSettings) -> str:
    """The #cloud-config document; raises ValueError when it is over the 64 KiB limit."""
    files = [
        (f"{PREFIX}/bundle.tar.gz", "0600", "b64",
         base64.b64encode(bundle_bytes).decode("ascii")),
        (ENV_FILE, "0600", None, environment(settings)),
        ("/etc/systemd/system/livestream-serve.service", "0644", None,
         unit("livestream web server", "serve", low_port=settings.http_port < 1024)),
        ("/etc/systemd/system/livestream-ingest.service", "0644", None,
         unit("livestream RTMP ingest", ingest_args(settings),
              low_port=settings.ingest_port < 1024)),
        (f"{PREFIX}/install.sh", "0755", None, INSTALL_SCRIPT),
    ]
    out = ["#cloud-config", "write_files:"]
    for path, permissions, encoding, content in files:
        out.append(f"  - path: {path}")
        out.append(f"    permissions: '{permissions}'")
        if encoding:
            out.append(f"    encoding: {encoding}")
            out.append(f"    content: {content}")
        else:
            out.append("    content: |")
            out.extend(f"      {line}" if line else "" for line in content.split("\n")[:-1])
    out += ["runcmd:", f"  - [bash, {PREFIX}/install.sh]", ""]
    user_data = "\n".join(out)
    size = len(user_data.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(
            f"the droplet's user-data is {size} bytes, over DigitalOcean's {USER_DATA_LIMIT}-byte "
            "limit; the project bundle is too big. Remove large files from app/, templates/ "
            "or static/ (media does not belong there).")
    return user_data
