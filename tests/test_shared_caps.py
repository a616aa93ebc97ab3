"""Finding 8 of the second review: Redis keeps per-token state capped like its in-memory
twins (used nonces, pending captchas), against one script posting or loading forms fast."""
from __future__ import annotations

import time

import redis
from redis_support import redis_server  # noqa: F401 (a fixture)

from app.community.shared import PREFIX, RedisCaptchas, RedisUsedNonces
from app.config import CaptchaConfig


def test_used_nonces_are_capped_and_still_refuse_a_replay(redis_server):  # noqa: F811
    client = redis.Redis.from_url(redis_server.new_database())
    nonces = RedisUsedNonces(client, max_used=100)
    now = time.time()
    for i in range(1000):
        assert nonces.first_use(f"sig-{i}".encode(), now + 3600 + i, now)
    assert client.zcard(PREFIX + "nonces") == 100
    assert client.dbsize() == 1, "one key for all used nonces, not one per nonce"
    assert not nonces.first_use(b"sig-999", now + 3600 + 999, now), "a replay was accepted"
    # expired ones are forgotten
    later = now + 10_000
    assert nonces.first_use(b"new", later + 60, later)
    assert client.zcard(PREFIX + "nonces") == 1
    client.close()


def test_pending_captchas_are_capped(redis_server):  # noqa: F811
    client = redis.Redis.from_url(redis_server.new_database())
    captchas = RedisCaptchas(CaptchaConfig(max_pending=5, generate_per_second=1000.0), client)
    issued = []
    for i in range(20):
        challenge = captchas.issue(f"viewer-{i}")
        assert challenge is not None
        issued.append(challenge)
        time.sleep(0.002)
    stored = [k for k in client.scan_iter(PREFIX + "captcha:*")]
    assert len(stored) == 5, f"{len(stored)} captchas kept in Redis (max_pending = 5)"
    # the newest still work, the oldest are gone
    newest = issued[-1]
    assert captchas.check(newest.id, "viewer-19", newest.answer)
    assert not captchas.check(issued[0].id, "viewer-0", issued[0].answer)
    client.close()
