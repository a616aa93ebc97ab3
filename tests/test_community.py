"""The chat rules and the store, in process, on a temporary SQLite file: no server, no browser.

Each test is one rule a viewer or the broadcaster meets; the HTTP-level stories are in
test_chat.py.
"""
from __future__ import annotations

import time

import pytest
from support import make_app

from app.community.chat import Refused, Submission
from app.community.store import Ban, Message, SQLiteStore, Viewer


@pytest.fixture
def services(tmp_path):
    """An app's services with captchas off and no flood pause, so each rule shows alone."""
    app = make_app(tmp_path, {"captcha": {"enabled": False},
                              "chat": {"min_interval": 0.001, "window_messages": 50,
                                       "tripcode_cost": 16}})
    yield app.services
    app.services.stop()


def viewer(services, name: str = "viewer"):
    """The same viewer for the same name: a token this server signed, made once per name."""
    tokens = services.__dict__.setdefault("test_tokens", {})
    return services.identities.requester(
        tokens.setdefault(name, services.identities.new_token()))


def post(services, who, text: str, **fields) -> Message:
    time.sleep(0.002)  # past chat.min_interval
    nonce = services.chat.nonces.issue(who.viewer_id)
    return services.chat.post(who, Submission(text=text, nonce=nonce, **fields))


def test_a_post_is_stored_published_and_read_back_in_order(services):
    who = viewer(services)
    listening = services.hub.last_id
    first = post(services, who, "hello")
    second = post(services, who, "  \n\nsecond line\n\n")
    assert [m.body for m in services.store.recent_messages()] == ["hello", "second line"]
    assert second.id > first.id and services.store.last_message_id() == second.id
    assert [e.kind for e in services.hub.since(listening)] == ["chat", "chat"]


def test_empty_long_and_many_line_messages_are_refused_with_the_limit(services):
    who = viewer(services)
    limit = services.config.chat.max_length
    with pytest.raises(Refused, match="Write a message first"):
        post(services, who, " \n ")
    with pytest.raises(Refused, match=f"the limit is {limit}"):
        post(services, who, "x" * (limit + 1))
    with pytest.raises(Refused, match="lines"):
        post(services, who, "\n".join("x" * (services.config.chat.max_lines + 1)))
    assert services.store.recent_messages() == []


def test_a_reused_form_posts_once_and_a_made_up_one_is_called_expired(services):
    who = viewer(services)
    nonce = services.chat.nonces.issue(who.viewer_id)
    services.chat.post(who, Submission(text="once", nonce=nonce))
    with pytest.raises(Refused) as repeat:
        services.chat.post(who, Submission(text="once", nonce=nonce))
    assert str(repeat.value) == "" and not repeat.value.keep_draft
    with pytest.raises(Refused, match="expired"):
        services.chat.post(who, Submission(text="forged", nonce="made-up"))
    assert [m.body for m in services.store.recent_messages()] == ["once"]


def test_names_are_cleaned_and_a_tripcode_follows_its_password(services):
    alice, bob = viewer(services, "alice"), viewer(services, "bob")
    a = post(services, alice, "hi", name="Alice\u202e\x00", trip_password="secret")
    b = post(services, bob, "hi", name="Bob", trip_password="secret")
    c = post(services, bob, "hi", name="Bob", trip_password="other")
    assert a.name == "Alice" and a.tripcode and a.tripcode == b.tripcode != c.tripcode
    assert a.tag != b.tag  # same tripcode, different people: the tags still tell them apart


def test_filters_censor_block_and_ban(services):
    services.chat.add_filter("darn", False, False, "censor")
    services.chat.add_filter(r"sp[a4]m+", True, False, "block")
    services.chat.add_filter("Forbidden", False, True, "ban")
    who = viewer(services)
    assert post(services, who, "well DARN it, darnation").body == "well *** it, darnation"
    with pytest.raises(Refused, match="not allowed here"):
        post(services, who, "buy SP4MMM")
    assert post(services, who, "forbidden in lower case").body
    with pytest.raises(Refused) as banned:
        post(services, who, "this is Forbidden")
    assert banned.value.status == 403
    assert viewer(services).banned  # the ban follows the token


def test_a_ban_with_hide_all_hides_the_viewers_messages_and_unban_lifts_the_tripcode_too(
        services):
    who = viewer(services)
    post(services, who, "one", trip_password="pw")
    post(services, who, "two")
    services.chat.ban(who.viewer_id, hide_all=True)
    assert services.store.recent_messages() == []
    tripcode = services.store.viewer(who.viewer_id).tripcode
    assert ("tripcode", tripcode) in services.store.bans()
    services.chat.unban(who.viewer_id)
    assert not services.store.bans() and not viewer(services).banned


def test_the_broadcaster_posts_without_nonce_or_flood_rules_and_is_marked(services):
    boss = services.identities.requester(None, broadcaster=True)
    for i in range(3):
        sent = services.chat.post(boss, Submission(text=f"notice {i}"))
    assert sent.broadcaster and sent.name == services.config.broadcaster.name


def test_flooding_is_refused_after_the_window_fills(tmp_path):
    app = make_app(tmp_path, {"captcha": {"enabled": False},
                              "chat": {"min_interval": 0.001, "window_messages": 3,
                                       "window_seconds": 30.0}})
    try:
        who = viewer(app.services)
        for i in range(3):
            post(app.services, who, f"m{i}")
        with pytest.raises(Refused, match="at most 3 in 30 seconds"):
            post(app.services, who, "m3")
    finally:
        app.services.stop()


# --- the store on its own ------------------------------------------------------------------

def test_store_keeps_messages_viewers_bans_filters_and_secrets_across_a_reopen(tmp_path):
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path, history=3, shown=2)
    for i in range(5):
        store.add_message(Message(0, "v1", "n", "t", "", 0, f"m{i}", time.time()))
    store.save_viewer(Viewer("v1", "t", name="Ann", tripcode="abc", verified=True))
    store.add_ban(Ban("tripcode", "xyz", time.time(), "note"))
    store.add_filter("word", False, False, "censor")
    secret = store.secret("purpose")
    hidden = store.hide_messages([store.last_message_id()])
    store.close()

    again = SQLiteStore(path, history=3, shown=2)
    try:
        assert [m.body for m in again.recent_messages()] == ["m3"]  # shown 2, one hidden
        assert [m.body for m in again.recent_messages(include_hidden=True)] == ["m3", "m4"]
        assert len(hidden) == 1 and again.message(hidden[0]).hidden
        assert again.viewer("v1") == Viewer("v1", "t", name="Ann", tripcode="abc",
                                            verified=True)
        assert ("tripcode", "xyz") in again.bans()
        assert [f.pattern for f in again.filters()] == ["word"]
        assert again.secret("purpose") == secret and len(secret) == 32
    finally:
        again.close()


def test_store_forgets_the_oldest_messages_beyond_its_history(tmp_path):
    """Retention is trimmed every hundred writes, so the file stays bounded."""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path, history=3, shown=10)
    for i in range(100):
        store.add_message(Message(0, "v", "n", "t", "", 0, f"m{i}", time.time()))
    store.close()
    again = SQLiteStore(path, history=3, shown=10)
    try:
        assert [m.body for m in again.recent_messages()] == ["m97", "m98", "m99"]
        assert again.message(1) is None
    finally:
        again.close()
