"""The chat stories of test_chat.py again, against `serve --workers 2` sharing one Redis: every
request may land on either worker (SO_REUSEPORT), so each story holds only if the state really
is shared (messages, push, captcha answers, nonces, flood windows, bans, filters, hidden
messages, broadcaster CSRF and sessions)."""
from __future__ import annotations

import pytest
from chat_support import chat_server
from redis_support import redis_server  # noqa: F401 (a fixture)
from test_chat import (  # noqa: F401 (collected here again, against this module's server)
    CHAT_CONFIG,
    test_a_double_submit_posts_once,
    test_a_message_posted_through_the_form_reaches_another_viewer,
    test_banned_viewer_cannot_post_but_can_still_watch,
    test_broadcaster_page_needs_auth_and_csrf_and_marks_its_messages,
    test_captcha_answers_are_single_use_vague_and_bound_to_the_viewer,
    test_compression_only_for_pages_and_json,
    test_failed_logins_are_rate_limited,
    test_flood_rules_trip_with_a_clear_message_and_ask_for_a_captcha_again,
    test_hidden_messages_leave_every_view,
    test_history_names_bans_filters_and_title_survive_restart_and_kill_9,
    test_js_viewers_get_chat_events_over_sse,
    test_limits_are_enforced_and_mirrored_in_the_form,
    test_names_messages_and_tripcodes,
    test_polling_frame_answers_304_when_nothing_changed,
    test_viewer_count_and_list_follow_who_receives_video,
    test_word_filters_censor_block_and_ban,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, live_stream, redis_server):  # noqa: F811
    """This module's chat server: two workers, one Redis database of their own."""
    srv = chat_server(tmp_path_factory.mktemp("chat_workers"), live_stream.directory,
                      CHAT_CONFIG, redis_server.new_database()).start()
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path, redis_server):  # noqa: F811
    """A test's own two workers on a Redis database of their own (restarted, locked)."""
    return lambda extra="": chat_server(tmp_path, tmp_path / "stream", extra,
                                        redis_url=redis_server.new_database())
