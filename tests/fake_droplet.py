"""What a droplet does at first boot with `cloud up`'s user-data, as far as it runs here.

The fake API hands each created droplet's body to `boot`: it writes the user-data's files
under a private root, runs the real receiver from them on the droplet's HTTP port (read from
the environment file, as the install script does), and once the receiver has the bundle
and has exited, starts `livestream serve` from the unpacked bundle on the same port, as the
systemd unit would, with the environment file's settings (with this machine's Python
instead of a fresh virtualenv, and without the onion service, which needs the internet; the
offline install test in test_cloud.py covers the virtualenv and the key files). Destroying
the droplet stops it all.

With `ssh_port`, the droplet also runs a real sshd (Debian's openssh-server) on loopback with
the host key the user-data hands to cloud-init and `authorized_keys` as root's keys, and
`remote_command` is a wrapper running livestream with the droplet's folders, as the install
script's /usr/local/bin/livestream does with the service's.
"""
from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from fake_digitalocean import SSH_KEYS, FakeDigitalOcean
from support import free_port, write_config

from app.runtime.processes import stop as stop_process

SSHD = "/usr/sbin/sshd"


@dataclass
class Rental:
    """A fake DigitalOcean whose droplets run sshd, a client key on the account, and
    `config(**cloud)`: the host's config (in folder/host) reaching them."""
    folder: Path
    fake: FakeDigitalOcean
    droplets: FakeDroplets
    client_key: Path
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def host_state(self) -> Path:
        return self.folder / "host" / "state"

    def droplet_state(self) -> Path:
        return self.droplets.files(self.droplets.booted[-1]) / "var" / "state"

    def config(self, **cloud) -> Path:
        return write_config(self.folder / "host", {"cloud": {
            "api_url": self.fake.url, "tag": "movie-night", "region": "fra1",
            "http_port": self.http_port, "poll_interval": 0.1, "ready_timeout": 30.0,
            "retry_seconds": 0.01, "onion": False, "ssh_keys": [SSH_KEYS[0]["fingerprint"]],
            "ssh_user": getpass.getuser(), "ssh_port": self.droplets.ssh_port,
            "ssh_identity": str(self.client_key),
            "remote_command": str(self.droplets.remote_command),
            "tunnel_port": free_port(), **cloud}})


@contextmanager
def rented(folder: Path, token: str) -> Iterator[Rental]:
    client_key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)],
                   check=True)
    authorized = folder / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    droplets = FakeDroplets(folder / "droplets", ssh_port=free_port(),
                            authorized_keys=authorized)
    fake = FakeDigitalOcean(token).start()
    fake.on_create, fake.on_delete = droplets.boot, droplets.destroy
    try:
        yield Rental(folder, fake, droplets, client_key, free_port())
    finally:
        droplets.stop_all()
        fake.stop()


class FakeDroplets:
    def __init__(self, root: Path, serve: bool = True, receive: bool = True,
                 ssh_port: int | None = None, authorized_keys: Path | None = None):
        self.root = root
        self.ssh_port = ssh_port
        self.authorized_keys = authorized_keys
        self.remote_command = root / "livestream"
        self.serve = serve  # False: the install "fails" after the upload, nothing serves
        self.receive = receive  # False: the droplet never gets as far as the receiver
        self.processes: dict[int, list[subprocess.Popen]] = {}
        self.receiver_codes: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stopped: set[int] = set()
        self.booted: list[int] = []

    def files(self, droplet_id: int) -> Path:
        return self.root / str(droplet_id)

    def boot(self, droplet_id: int, body: dict) -> None:
        base = self.files(droplet_id)
        self.booted.append(droplet_id)
        written = {}
        document = yaml.safe_load(body["user_data"])
        if self.ssh_port:
            self._start_sshd(droplet_id, document["ssh_keys"]["ed25519_private"])
        for item in document["write_files"]:
            path = base / item["path"].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(item["content"])
            path.chmod(int(item["permissions"], 8))
            written[item["path"]] = path
        if self.receive:
            threading.Thread(target=self._run, args=(droplet_id, written), daemon=True).start()

    def _run(self, droplet_id: int, written: dict[str, Path]) -> None:
        env_file = next(p for name, p in written.items() if name.endswith("/env"))
        settings = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        port = settings["LIVESTREAM_PORT"]
        src = self.files(droplet_id) / "opt" / "livestream" / "src"
        receiver = self._start(droplet_id, [
            sys.executable, str(written["/opt/livestream/receiver.py"]),
            "--key-file", str(written["/etc/livestream/deploy.key"]), "--dest", str(src),
            "--host", "127.0.0.1", "--port", port,
            "--timeout", settings["LIVESTREAM_RECEIVE_TIMEOUT"]], cwd=self.root)
        if receiver is None:
            return
        code = receiver.wait()
        self.receiver_codes[droplet_id] = code
        if code != 0 or not self.serve:
            return
        data = self.files(droplet_id) / "var"
        # the unit's EnvironmentFile, as systemd passes it (the broadcaster's password and
        # allow_clearnet among it), with the addresses and folders of this machine on top;
        # the onion key goes into the state folder as the install script puts it there
        unit_env = {k: v for k, v in settings.items() if k != "LIVESTREAM_ONION_KEY"}
        if settings.get("LIVESTREAM_ONION_KEY"):
            onion = data / "state" / "onion"
            onion.mkdir(parents=True, mode=0o700)
            (onion / "private_key").write_text(settings["LIVESTREAM_ONION_KEY"] + "\n")
            (onion / "private_key").chmod(0o600)
        env = dict(os.environ, **unit_env)
        env.update(LIVESTREAM_HOST="127.0.0.1", LIVESTREAM_PORT=port,
                   LIVESTREAM_STREAM_DIR=str(data / "stream"),
                   LIVESTREAM_STATE_DIR=str(data / "state"))
        env.pop("PYTHONPATH", None)
        self._wrapper(src, env)
        self._start(droplet_id, [sys.executable, "-m", "app.cli", "--config",
                                 str(src / "config.toml"), "serve"], cwd=src, env=env)

    def _start_sshd(self, droplet_id: int, host_key: str) -> None:
        base = self.files(droplet_id) / "ssh"
        base.mkdir(parents=True)
        key = base / "ssh_host_ed25519_key"
        key.write_text(host_key)
        key.chmod(0o600)
        config = base / "sshd_config"
        config.write_text(f"""Port {self.ssh_port}
ListenAddress 127.0.0.1
HostKey {key}
PidFile none
AuthorizedKeysFile {self.authorized_keys}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
""")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        self._start(droplet_id, [SSHD, "-D", "-e", "-f", str(config)], cwd=base)

    def _wrapper(self, src: Path, env: dict) -> None:
        """What the install script's /usr/local/bin/livestream is on a real droplet."""
        exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in
                           ("LIVESTREAM_STREAM_DIR", "LIVESTREAM_STATE_DIR"))
        self.remote_command.write_text(
            f"#!/bin/sh\nexport {exports}\ncd {shlex.quote(str(src))}\n"
            f"exec {shlex.quote(sys.executable)} -m app.cli --config "
            f"{shlex.quote(str(src / 'config.toml'))} \"$@\"\n")
        self.remote_command.chmod(0o755)

    def _start(self, droplet_id: int, argv: list[str], cwd: Path,
               env: dict | None = None) -> subprocess.Popen | None:
        with self.lock:
            if droplet_id in self.stopped:
                return None
            with open(self.files(droplet_id) / "boot.log", "ab") as log:
                process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=log)
            self.processes.setdefault(droplet_id, []).append(process)
            return process

    def destroy(self, droplet_id: int) -> None:
        with self.lock:
            self.stopped.add(droplet_id)
            processes = self.processes.get(droplet_id, [])
        for process in processes:
            stop_process(process, 10)

    def stop_all(self) -> None:
        for droplet_id in list(self.booted):
            self.destroy(droplet_id)
