"""The stream key (a file in the state folder, owner-only) and the publisher allow-list."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


KEY_FILE = "ingest.key"



def key_path(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def load_key(state_dir: Path) -> str:
    """The stream key; made on first use, readable by the owner only."""
    path = key_path(state_dir)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return rotate_key(state_dir)
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; making it owner-only", path)
        os.chmod(path, 0o600)
    if len(key) < 16:
        raise ValueError(f"{path}: stream key too short; make a new one: livestream key --new")
    return key


def rotate_key(state_dir: Path) -> str:
    """Write a fresh random key (atomically, 0600) and return it."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(24)
    temp = state_dir / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    os.replace(temp, key_path(state_dir))
    return key


def key_matches(offered: str, expected: str) -> bool:
    """Constant-time comparison; a '?query' some tools append to the name is ignored."""
    offered = offered.split("?", 1)[0]
    return hmac.compare_digest(offered.encode("utf-8", "replace"), expected.encode())


class AllowList:
    """Publisher addresses allowed to connect; empty means every address."""

    def __init__(self, entries: list[str]):
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries]

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


