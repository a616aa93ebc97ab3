"""SSH to the droplet, with its host key known before the first connection.

Everything that carries the stream key or the video to the droplet goes through SSH: `cloud
play`'s party session (remote_party.py) and `ssh -L` to the droplet's ingest, which listens
only on its loopback. A fresh droplet's host key is usually learned on first use, which a
man in the middle would answer; instead `cloud up` makes the droplet's ed25519 host key
here, hands it to cloud-init in the user-data (readable only from the droplet itself) and
pins its public half in a known_hosts file of ours under the droplet's name, so ssh refuses
any other key. We run Debian's `ssh` rather than a Python SSH library: it is what users
already trust, it does the forwarding, the agent and their keys as they configured them.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSTALL_SSH = "ssh is not installed: sudo apt install openssh-client"


class TunnelError(Exception):
    """A problem with SSH for a person to read."""


@dataclass(frozen=True)
class HostKey:
    private: str  # OpenSSH format, for the user-data only
    public: str  # "ssh-ed25519 AAAA... comment"


def listening(port: int) -> bool:
    """Someone (ssh's forward) listens on this loopback port. Found by failing to bind it:
    connecting would open a channel to the far end (the ingest) for nothing."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def new_host_key() -> HostKey:
    """A fresh ed25519 host key pair, made by ssh-keygen in a folder removed afterwards."""
    if shutil.which("ssh-keygen") is None:
        raise TunnelError(INSTALL_SSH)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "livestream",
                        "-f", str(path)], check=True, capture_output=True, timeout=30)
        return HostKey(private=path.read_text(), public=path.with_suffix(".pub").read_text()
                       .strip())


def pin(known_hosts: Path, alias: str, key: HostKey) -> None:
    """Trust `key` for `alias` (and only it): older lines for the alias are dropped."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = []
    if known_hosts.exists():
        kept = [line for line in known_hosts.read_text().splitlines()
                if line.split(" ", 1)[0] != alias]
    algorithm, blob = key.public.split()[:2]
    known_hosts.write_text("".join(f"{line}\n" for line in [*kept, f"{alias} {algorithm} {blob}"]))


@dataclass(frozen=True)
class Tunnel:
    """How to reach one droplet over SSH."""
    host: str
    alias: str  # the droplet's name: its line in known_hosts
    known_hosts: Path
    user: str = "root"
    port: int = 22
    identity: str = ""

    def argv(self, *options: str, command: tuple[str, ...] = ()) -> list[str]:
        """ssh with the pinned host key, no prompts (a missing key fails rather than asks),
        forwards that must work or fail, and a dead link noticed within 30 s."""
        if shutil.which("ssh") is None:
            raise TunnelError(INSTALL_SSH)
        argv = ["ssh", "-T", "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", f"HostKeyAlias={self.alias}", "-o", "HostKeyAlgorithms=ssh-ed25519",
                "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=3"]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return [*argv, *options, f"{self.user}@{self.host}", *command]

    def shown(self, *options: str) -> str:
        """The line a person types for the same connection (OBS's tunnel)."""
        extra = f" -i {self.identity}" if self.identity else ""
        port = f" -p {self.port}" if self.port != 22 else ""
        return (f"ssh -N{port}{extra} -o UserKnownHostsFile={self.known_hosts} "
                f"-o HostKeyAlias={self.alias} {' '.join(options)} {self.user}@{self.host}")
