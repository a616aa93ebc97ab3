"""`livestream backup FILE` and `livestream restore FILE`: everything that makes this stream
itself, in one file.

What goes in: the onion key (the address viewers bookmarked), its client-authorization keys,
an Onionbalance front key and a backend's service keys; the chat store (server secret,
tripcode and password salts, the password hash, messages, viewers, bans, filters), copied
with SQLite's online backup API, so a backup taken while the server runs is consistent; the
cockpit's history; the RTMP stream key; the config file. Not tor's own cache (`state/tor/`,
rebuilt at start) nor sockets.

With `[store] redis_url` the shared parts live in Redis: every `livestream:` key goes in too
(Redis's own DUMP format, with its time to live) and is put back with RESTORE; the identity
then comes from the server secret kept there.

The file is a gzipped tar written 0600; with a passphrase it is sealed with AES-256-GCM under
a key scrypt derives from it (`cryptography`, already a dependency for onion keys). Restore
refuses to overwrite the state of a different stream (another server secret) unless told
`--force`, and puts every file back owner-only.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.community.schema import SCHEMA_VERSION, backup_to
from app.config import Config

FORMAT = 1
SEALED = b"LSBACKUP1\n"  # then salt (16), nonce (12), AES-GCM ciphertext
SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
DATABASES = ("livestream.sqlite3", "history.sqlite3")
SKIPPED = ("tor", "party.sock")  # rebuilt or per process
MAX_MEMBER = 512 << 20  # a restore reads no member larger than this


class BackupError(Exception):
    """Backup or restore could not be done; the text says why and what to do."""


def _fingerprint(secret: bytes) -> str:
    return hmac.new(secret, b"backup-identity", hashlib.sha256).hexdigest()[:16]


def identity(state_dir: Path, redis_url: str = "") -> str | None:
    """A fingerprint of the stream's server secret (not the secret): which stream this is."""
    if redis_url:
        from app.community.shared import PREFIX, RedisConfigError, connect

        try:
            client = connect(redis_url)
        except RedisConfigError as exc:
            raise BackupError(str(exc)) from None
        secret = client.get(f"{PREFIX}secret:server")
        client.close()
        return _fingerprint(bytes(secret)) if secret else None
    database = state_dir / "livestream.sqlite3"
    if not database.exists():
        return None
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM secrets WHERE name = 'server'").fetchone()
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()
    return _fingerprint(bytes(row[0])) if row else None


def _key(passphrase: str, salt: bytes) -> bytes:
    return hashlib.scrypt(passphrase.encode(), salt=salt, dklen=32, maxmem=64 << 20, **SCRYPT)


def seal(data: bytes, passphrase: str) -> bytes:
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    return SEALED + salt + nonce + AESGCM(_key(passphrase, salt)).encrypt(nonce, data, SEALED)


def unseal(data: bytes, passphrase: str | None) -> bytes:
    if not data.startswith(SEALED):
        return data
    if not passphrase:
        raise BackupError("this backup is encrypted: give its passphrase (--passphrase-file "
                          "FILE or env LIVESTREAM_BACKUP_PASSPHRASE)")
    body = data[len(SEALED):]
    salt, nonce, ciphertext = body[:16], body[16:28], body[28:]
    try:
        return AESGCM(_key(passphrase, salt)).decrypt(nonce, ciphertext, SEALED)
    except InvalidTag:
        raise BackupError("wrong passphrase, or the file is damaged") from None


def backup(config: Config, target: Path, passphrase: str | None = None) -> dict:
    """Write the backup to `target` (0600); returns its manifest."""
    state = config.state_dir
    redis_url = config.store.redis_url
    if not (state / "livestream.sqlite3").exists() and not redis_url:
        raise BackupError(f"{state} holds no stream yet (no livestream.sqlite3): nothing to "
                          "back up. Is --config the one the server uses?")
    buffer = io.BytesIO()
    manifest = {"format": FORMAT, "schema": SCHEMA_VERSION,
                "identity": identity(state, redis_url), "created": int(time.time()),
                "files": [], "redis_keys": 0}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive, \
            tempfile.TemporaryDirectory() as scratch:
        for path in sorted(state.rglob("*")):
            relative = path.relative_to(state)
            if (relative.parts[0] in SKIPPED or path.is_dir() or path.is_symlink()
                    or path.name.endswith(("-wal", "-shm", "-journal", ".bak", ".sock"))):
                continue
            if path.name in DATABASES and len(relative.parts) == 1:
                copy = Path(scratch) / path.name
                source = sqlite3.connect(path, timeout=10)
                try:
                    backup_to(source, copy)  # consistent while the server writes
                finally:
                    source.close()
                path = copy
            archive.add(path, arcname=f"state/{relative}", recursive=False)
            manifest["files"].append(str(relative))
        if config.source and Path(config.source).exists():
            archive.add(config.source, arcname="config.toml", recursive=False)
        if redis_url:
            shared = _dump_redis(redis_url)
            manifest["redis_keys"] = len(shared)
            _add_bytes(archive, "redis.json", json.dumps(shared).encode(), manifest["created"])
        data = json.dumps(manifest, indent=1).encode()
        _add_bytes(archive, "manifest.json", data, manifest["created"])
    payload = buffer.getvalue()
    if passphrase:
        payload = seal(payload, passphrase)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(payload)
    os.chmod(target, 0o600)
    return manifest


def restore(config: Config, source: Path, passphrase: str | None = None,
            force: bool = False) -> dict:
    """Put a backup's state back into this config's state folder; returns its manifest."""
    try:
        data = unseal(Path(source).read_bytes(), passphrase)
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{source}: not a livestream backup ({exc})") from None
    with archive:
        members = {m.name: m for m in archive.getmembers()}
        manifest = _read_json(archive, members.get("manifest.json"))
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{source}: backup format {manifest.get('format')!r} is not one "
                              f"this livestream reads ({FORMAT})")
        if manifest.get("schema", 0) > SCHEMA_VERSION:
            raise BackupError(f"{source} comes from a newer livestream (store schema "
                              f"{manifest['schema']}): upgrade livestream first")
        state = config.state_dir
        here = identity(state, config.store.redis_url)
        if here and here != manifest.get("identity") and not force:
            raise BackupError(f"{state} holds a different stream (another server secret): "
                              "restoring would replace its address, password and chat. Move "
                              "it away, point --config at an empty state folder, or pass "
                              "--force")
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state, 0o700)
        for name, member in members.items():
            if name == "config.toml" and member.isfile() and member.size < 1 << 20:
                name, member.name = "state/config-from-backup.toml", "config-from-backup.toml"
            if not name.startswith("state/") or not member.isfile():
                continue
            relative = Path(name[len("state/"):])
            if relative.is_absolute() or ".." in relative.parts or member.size > MAX_MEMBER:
                raise BackupError(f"{source}: refusing the unsafe entry {name!r}")
            target = state / relative
            for parent in reversed(target.relative_to(state).parents[:-1]):
                (state / parent).mkdir(mode=0o700, exist_ok=True)
            if target.name in DATABASES:
                for suffix in ("-wal", "-shm"):
                    Path(f"{target}{suffix}").unlink(missing_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(archive.extractfile(member).read())
            os.chmod(target, 0o600)
        if "redis.json" in members:
            if not config.store.redis_url:
                raise BackupError(f"{source} holds a stream kept in Redis: set [store] "
                                  "redis_url to the Redis to restore it into")
            member = members["redis.json"]
            if member.size > MAX_MEMBER:
                raise BackupError(f"{source}: the Redis part is too large")
            _restore_redis(config.store.redis_url,
                           json.loads(archive.extractfile(member).read()))
    return manifest


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o600
    archive.addfile(info, io.BytesIO(data))


def _dump_redis(url: str) -> list[list]:
    """Every livestream key: [name, milliseconds to live (-1: none), DUMP bytes as hex]."""
    from app.community.shared import PREFIX, connect

    client = connect(url)
    try:
        out = []
        for key in client.scan_iter(match=PREFIX + "*", count=1000):
            dumped = client.dump(key)
            if dumped is not None:
                out.append([key.decode(), client.pttl(key), dumped.hex()])
        return out
    finally:
        client.close()


def _restore_redis(url: str, keys: list[list]) -> None:
    from app.community.shared import PREFIX, connect

    client = connect(url)
    try:
        for name, ttl, dumped in keys:
            if not str(name).startswith(PREFIX):
                raise BackupError(f"refusing the Redis key {name!r}: not ours")
            client.restore(name, max(int(ttl), 0), bytes.fromhex(dumped), replace=True)
    finally:
        client.close()


def _read_json(archive: tarfile.TarFile, member) -> dict:
    if member is None or member.size > 1 << 20:
        raise BackupError("not a livestream backup (no manifest)")
    try:
        return json.loads(archive.extractfile(member).read())
    except (ValueError, AttributeError):
        raise BackupError("not a livestream backup (a damaged manifest)") from None
