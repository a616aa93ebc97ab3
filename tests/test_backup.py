"""Backup and restore keep a stream itself (its onion address, tripcodes, chat, bans, stream
key), encrypted when asked; restore will not overwrite another stream by accident; and the
store's schema version: a store of the release before versions is migrated, a newer one
refused."""
from __future__ import annotations

import shutil
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from redis_support import redis_server  # noqa: F401 (a fixture)
from support import livestream, make_app, write_config

from app.community.schema import SCHEMA_VERSION
from app.community.store import Ban, Message
from app.config import load
from app.onion.service import OnionPaths, load_or_create_key, stored_address
from app.runtime.backup import SEALED
from app.sources.rtmp.keys import load_key

FIXTURE = Path(__file__).parent / "fixtures" / "store-schema0.sqlite3"


def stream_with_history(folder: Path) -> dict:
    """A stream's state: onion key, stream key, a message, a ban, a tripcode. The app stays
    open (its SQLite WAL not checkpointed) while the backup runs, as a live server's would."""
    app = make_app(folder, {"tor": {"enabled": True}})
    s = app.services
    s.store.add_message(Message(0, "viewer-a", "alice", "abc", "", 1, "see you at nine",
                                time.time()))
    s.store.add_ban(Ban("viewer", "viewer-b", time.time(), "spam"))
    config = load(write_config(folder, {"tor": {"enabled": True}}))
    return {"app": app, "config": config, "trip": s.chat.tripcode("correct horse"),
            "onion": load_or_create_key(OnionPaths.from_config(config)).address,
            "key": load_key(config.state_dir)}


def test_backup_then_restore_into_a_fresh_folder_is_the_same_stream(tmp_path):
    before = stream_with_history(tmp_path / "a")
    secret = tmp_path / "passphrase"
    secret.write_text("a long passphrase\n")
    file = tmp_path / "stream.backup"
    try:
        made = livestream(before["config"].source, "backup", str(file), "--passphrase-file",
                          str(secret))
    finally:
        before["app"].services.stop()
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file.read_bytes().startswith(SEALED)  # encrypted
    assert b"see you at nine" not in file.read_bytes()

    fresh = write_config(tmp_path / "b", {"tor": {"enabled": True}})
    wrong = tmp_path / "wrong"
    wrong.write_text("not it")
    refused = livestream(fresh, "restore", str(file), "--passphrase-file", str(wrong))
    assert refused.returncode == 1 and "wrong passphrase" in refused.stderr
    done = livestream(fresh, "restore", str(file), "--passphrase-file", str(secret))
    assert done.returncode == 0, done.stderr

    config = load(fresh)
    assert stored_address(config) == before["onion"]
    assert load_key(config.state_dir) == before["key"]
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700
    for path in config.state_dir.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    app = make_app(tmp_path / "b")
    try:
        s = app.services
        assert s.chat.tripcode("correct horse") == before["trip"]
        assert [m.body for m in s.store.recent_messages()] == ["see you at nine"]
        assert ("viewer", "viewer-b") in s.store.bans()
    finally:
        app.services.stop()


def test_restore_will_not_replace_another_stream_unless_forced(tmp_path):
    first = stream_with_history(tmp_path / "first")
    first["app"].services.stop()
    file = tmp_path / "first.backup"
    assert livestream(first["config"].source, "backup", str(file)).returncode == 0
    other = make_app(tmp_path / "other")  # a different stream: its own server secret
    other.services.stop()
    config = write_config(tmp_path / "other")
    refused = livestream(config, "restore", str(file))
    assert refused.returncode == 1 and "different stream" in refused.stderr
    forced = livestream(config, "restore", str(file), "--force")
    assert forced.returncode == 0, forced.stderr
    assert stored_address(load(config)) == first["onion"]


def test_a_store_of_the_release_before_schema_versions_is_migrated(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copy(FIXTURE, state / "livestream.sqlite3")
    app = make_app(tmp_path)
    try:
        assert [m.body for m in app.services.store.recent_messages()] == [
            "hello from the old release"]
        assert ("viewer", "v2") in app.services.store.bans()
    finally:
        app.services.stop()
    db = sqlite3.connect(state / "livestream.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    kept = list(state.glob("livestream.sqlite3.schema0-*.bak"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600


def test_a_store_from_a_newer_release_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    shutil.copy(FIXTURE, state / "livestream.sqlite3")
    db = sqlite3.connect(state / "livestream.sqlite3")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer livestream"):
        make_app(tmp_path)


def test_the_redis_layout_carries_a_version_and_a_newer_one_is_refused(tmp_path,
                                                                        redis_server):  # noqa: F811
    import redis

    from app import open_state
    from app.community.shared import LAYOUT_KEY, LAYOUT_VERSION

    url = redis_server.new_database()
    config = load(write_config(tmp_path, {"store": {"redis_url": url}}))
    open_state(config).close()
    client = redis.Redis.from_url(url)
    assert int(client.get(LAYOUT_KEY)) == LAYOUT_VERSION
    client.set(LAYOUT_KEY, LAYOUT_VERSION + 1)
    with pytest.raises(RuntimeError, match="newer livestream"):
        open_state(config)
    client.flushdb()


def test_a_stream_kept_in_redis_is_backed_up_and_restored_too(tmp_path,
                                                               redis_server):  # noqa: F811
    first_url, second_url = redis_server.new_database(), redis_server.new_database()
    app = make_app(tmp_path / "a", {"store": {"redis_url": first_url}})
    try:
        s = app.services
        s.store.add_message(Message(0, "viewer-r", "rita", "xyz", "", 2, "kept in redis",
                                    time.time()))
        s.store.add_ban(Ban("viewer", "viewer-q", time.time(), "flood"))
        trip = s.chat.tripcode("battery staple")
    finally:
        app.services.stop()
    file = tmp_path / "redis.backup"
    source = write_config(tmp_path / "a", {"store": {"redis_url": first_url}})
    made = livestream(source, "backup", str(file))
    assert made.returncode == 0, made.stderr
    target = write_config(tmp_path / "b", {"store": {"redis_url": second_url}})
    done = livestream(target, "restore", str(file))
    assert done.returncode == 0, done.stderr
    again = make_app(tmp_path / "b", {"store": {"redis_url": second_url}})
    try:
        assert again.services.chat.tripcode("battery staple") == trip
        assert [m.body for m in again.services.store.recent_messages()] == ["kept in redis"]
        assert ("viewer", "viewer-q") in again.services.store.bans()
    finally:
        again.services.stop()
