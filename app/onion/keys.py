"""Onion service keys: the service's ED25519-V3 key file and v3 client authorization keys.

Kept apart from the tor process handling so keys can be made, read and checked (and the
address derived from them) without a running tor.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEY_TYPE = "ED25519-V3"
TOR_SECRET_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyFileError(Exception):
    """A key file that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class OnionKey:
    """An expanded ED25519 secret key (64 bytes) as tor's ADD_ONION takes it."""

    secret: bytes

    @property
    def blob(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    @property
    def address(self) -> str:
        return onion_address(public_key(self.secret))


@dataclass(frozen=True)
class ClientKeys:
    """One invited viewer: tor keeps the public half, the viewer gets the private half."""

    name: str
    public: str   # base32, as tor's ClientAuthV3 and authorized_clients files want it
    private: str  # base32, what Tor Browser asks for

    def tor_browser_line(self, address: str) -> str:
        """The line for a ClientOnionAuthDir file (Tor Browser stores the same)."""
        return f"{address.removesuffix('.onion')}:descriptor:x25519:{self.private}"


# --- the service key file ---------------------------------------------------------------------

def parse_key(data: bytes, where: str) -> OnionKey:
    """Accept our text form `ED25519-V3:<base64>` or tor's own hs_ed25519_secret_key file."""
    if data.startswith(TOR_SECRET_HEADER) and len(data) == len(TOR_SECRET_HEADER) + 64:
        return OnionKey(data[len(TOR_SECRET_HEADER):])
    text = data.decode("ascii", "replace").strip()
    kind, _, blob = text.partition(":")
    if kind != KEY_TYPE:
        raise KeyFileError(
            f"{where}: not an onion key (expected a line starting with '{KEY_TYPE}:' or a tor "
            "hs_ed25519_secret_key file). Fix or remove it; removing it makes a new address."
        )
    try:
        secret = base64.b64decode(blob, validate=True)
    except ValueError:
        secret = b""
    if len(secret) != 64 or not _is_clamped(secret):
        raise KeyFileError(
            f"{where}: the {KEY_TYPE} key is malformed (it must be 64 bytes of base64). "
            "Restore it from a backup, or remove it to get a new address."
        )
    return OnionKey(secret)


def read_key(path: Path) -> OnionKey | None:
    """The persisted key, or None when there is none yet. Loosened permissions are fixed."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(
            f"{path}: cannot read the onion key ({exc.strerror}). It must be a file readable "
            "by the user running livestream; check tor.key_file and its permissions."
        ) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("%s was readable by others (mode %o); set it to 0600. Anyone who read it "
                    "can impersonate this onion address.", path, stat.S_IMODE(info.st_mode))
        os.chmod(path, 0o600)
    return parse_key(data, str(path))


def write_key(path: Path, key: OnionKey) -> None:
    """Write atomically, created 0600 from the start (never briefly world-readable)."""
    write_private(path, f"{KEY_TYPE}:{key.blob}\n")


def write_private(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def new_key() -> OnionKey:
    """A fresh key made the way ed25519 expands a random seed (hash, then clamp)."""
    expanded = bytearray(hashlib.sha512(os.urandom(32)).digest())
    expanded[0] &= 248
    expanded[31] &= 127
    expanded[31] |= 64
    return OnionKey(bytes(expanded))


def _is_clamped(secret: bytes) -> bool:
    return secret[0] & 7 == 0 and secret[31] & 0x80 == 0 and secret[31] & 0x40 != 0


# --- deriving the address (ed25519 on the expanded key; cryptography only takes seeds) ---------

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_BASE_Y = 4 * pow(5, _P - 2, _P) % _P


def _recover_x(y: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    return _P - x if x & 1 else x


_BASE = (_recover_x(_BASE_Y), _BASE_Y, 1, _recover_x(_BASE_Y) * _BASE_Y % _P)


def _add(a, b):
    """Point addition in extended coordinates (X, Y, Z, T)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % _P
    pb = (y1 + x1) * (y2 + x2) % _P
    pc = 2 * t1 * t2 * _D % _P
    pd = 2 * z1 * z2 % _P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def public_key(secret: bytes) -> bytes:
    """The public key of an expanded secret key: its first 32 bytes are the scalar."""
    scalar = int.from_bytes(secret[:32], "little")
    point, addend = (0, 1, 1, 0), _BASE
    while scalar:
        if scalar & 1:
            point = _add(point, addend)
        addend = _add(addend, addend)
        scalar >>= 1
    x, y, z, _ = point
    inverse = pow(z, _P - 2, _P)
    x, y = x * inverse % _P, y * inverse % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def onion_address(public: bytes) -> str:
    """A v3 address: base32(public key | checksum | version), rend-spec-v3 section 6."""
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public + version).digest()[:2]
    return base64.b32encode(public + checksum + version).decode("ascii").lower() + ".onion"


# --- client authorization -----------------------------------------------------------------------

def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def b32decode(text: str) -> bytes:
    """Tor writes base32 without padding."""
    return base64.b32decode(text + "=" * (-len(text) % 8))


def new_client_keys(name: str) -> ClientKeys:
    """A fresh x25519 pair for one viewer."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    check_client_name(name)
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return ClientKeys(name, _b32(raw_public), _b32(raw_private))


def check_client_name(name: str) -> None:
    if not CLIENT_NAME.fullmatch(name):
        raise KeyFileError(
            f"client name {name!r} is not allowed: use 1-32 letters, digits, '-' or '_'")


def add_client(directory: Path, name: str) -> ClientKeys:
    """Store only the public key (as tor's authorized_clients/<name>.auth); return both."""
    keys = new_client_keys(name)
    path = directory / f"{name}.auth"
    if path.exists():
        raise KeyFileError(f"{path}: a client named {name!r} exists; remove it first")
    write_private(path, f"descriptor:x25519:{keys.public}\n")
    return keys


def remove_client(directory: Path, name: str) -> bool:
    check_client_name(name)
    path = directory / f"{name}.auth"
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def authorized_clients(directory: Path) -> dict[str, str]:
    """Name -> base32 public key for every stored client."""
    clients = {}
    for path in sorted(directory.glob("*.auth")) if directory.is_dir() else ():
        try:
            text = path.read_text("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: cannot read this client key ({exc})") from None
        match = re.fullmatch(r"descriptor:x25519:([A-Z2-7]{52})", text)
        if not match:
            raise KeyFileError(f"{path}: not a 'descriptor:x25519:<base32 key>' line; "
                               "remove it and add the client again")
        clients[path.stem] = match.group(1)
    return clients
