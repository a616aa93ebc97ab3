"""Application factory: configuration in, a wired Flask app with its services out."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys

from flask_compress import Compress

from app.cockpit.history import History
from app.community.captcha import Captchas
from app.community.chat import Chat
from app.community.hub import Hub
from app.community.identity import (
    BroadcasterPassword,
    BroadcasterSessions,
    FailedLogins,
    Identities,
    local_key,
)
from app.community.invites import InviteBook
from app.community.moderators import Moderation
from app.community.presence import Audience
from app.community.store import Store, open_store, private_dir
from app.config import PROJECT_DIR, Config
from app.hooks.bus import HookBus
from app.services import App, Services
from app.stream.clock import StreamClock
from app.stream.timeline import TimelineBuilder
from app.stream.watcher import StreamState
from app.web import access, security
from app.web.budgets import ClientBudgets
from app.web.limits import BodyLimit, PerViewerLimit, StreamSlots
from app.web.views import (  # noqa: F401  their routes join backstage.bp
    api,
    backstage,
    broadcaster,
    chat,
    cockpit,
    errors,
    events,
    moderate,
    pages,
    party,
    stream_files,
)

log = logging.getLogger(__name__)


def create_app(config: Config) -> App:
    """Build the app and its services; nothing runs until `app.services.start()`."""
    app = App(__name__, template_folder=str(PROJECT_DIR / "templates"),
              static_folder=str(PROJECT_DIR / "static"))
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.wsgi_app = BodyLimit(app.wsgi_app, config.server.max_body_bytes)
    config.stream_dir.mkdir(parents=True, exist_ok=True)
    private_dir(config.state_dir)
    app.services = build_services(config)
    app.message_html = chat.MessageHTML(app)

    security.init_app(app)
    access.init_app(app)
    init_compression(app)
    for view in (pages, events, errors, api, stream_files, chat, moderate, backstage):
        app.register_blueprint(view.bp)
    app.register_blueprint(cockpit.metrics_bp)
    log.debug("app created for %s", config.source)
    return app


def build_services(config: Config) -> Services:
    """SQLite and this process's memory by default; Redis for everything viewers share when
    `[store] redis_url` is set (several workers or edges), so any worker can answer any
    viewer. Raises RuntimeError with a sentence when the state cannot be opened or reached."""
    client = None
    if config.store.redis_url:
        from app.community import shared

        client = shared.connect(config.store.redis_url)
    store = open_state(config, client)
    identities = Identities(store)
    key = local_key(config.state_dir)
    captchas = make_captchas(config, client)
    if client is None:
        hub, audience, generations, failures = Hub(), Audience(config.viewers), None, None
        chat_state: dict = {}  # the chat's own in-memory nonces, flood windows and hides
        csrf_token, clock = secrets.token_urlsafe(32), StreamClock()
    else:
        hub = shared.RedisHub(client)
        audience = shared.RedisAudience(config.viewers, client)
        generations = shared.RedisGenerations(client)
        failures = shared.RedisFailedLogins(client, config.broadcaster)
        chat_state = {"used_nonces": shared.RedisUsedNonces(client, config.chat.max_used_nonces),
                      "flood": shared.RedisFloodWindows(client, config.chat),
                      "hides": shared.RedisHideVersion(client)}
        # the same for every worker, or a broadcaster form from one is refused by another;
        # from the local key, so reading Redis does not give it
        csrf_token = hmac.new(key, b"broadcaster-csrf", hashlib.sha256).hexdigest()
        # one clock for every worker: a player syncs with one and reads timelines from another
        clock = StreamClock(identities.derive("player-clock", b""))
    hooks = HookBus(client)
    chat = Chat(store, identities, hub, config.chat, config.broadcaster, captchas, **chat_state)
    chat.emit = hooks.emit
    stream = StreamState(config.stream_dir, config.stream, generations)
    chat.stream_online = lambda: stream.snapshot.online
    return Services(
        config=config,
        hooks=hooks,
        invites=InviteBook(store),
        moderation=Moderation(store, chat),
        stream=stream,
        timeline=TimelineBuilder(),
        hub=hub,
        store=store,
        identities=identities,
        audience=audience,
        captchas=captchas,
        password=broadcaster_password(store, config, failures),
        chat=chat,
        sessions=BroadcasterSessions(store, shared=client is not None, key=key),
        csrf_token=csrf_token,
        clock=clock,
        history=History(config.state_dir / "history.sqlite3",
                        int(os.environ.get("LIVESTREAM_WORKER", "0") or 0)),
        **limits(config),
    )


def open_state(config: Config, client=None) -> Store:
    """The store alone, as configured: Redis (`client`, or one connected now) when `[store]
    redis_url` is set, else the SQLite file; also for commands that run beside the server.
    Raises RuntimeError with a sentence when it cannot be opened or reached."""
    if not config.store.redis_url:
        return open_store(config.state_dir, config.chat.history, config.chat.shown,
                          config.viewers.max_stored, config.viewers.cache_size)
    from app.community import shared

    return shared.RedisStore(client or shared.connect(config.store.redis_url),
                             config.chat.history, config.chat.shown, config.viewers.max_stored)


def limits(config: Config) -> dict:
    """Per-process caps: each worker bounds its own connections (why they are not shared:
    docs/architecture.md, "Several workers")."""
    return {
        "video_slots": PerViewerLimit(config.stream.max_connections_per_viewer),
        "chat_slots": StreamSlots(config.chat.max_streams, config.chat.max_streams_per_viewer),
        "push_slots": StreamSlots(config.viewers.max_push, config.viewers.max_push_per_viewer),
        "budgets": ClientBudgets(config.budgets),
    }


def broadcaster_password(store, config: Config,
                         failures: FailedLogins | None = None) -> BroadcasterPassword:
    password = BroadcasterPassword(store, config.broadcaster, failures)
    if password.generated:
        # Printed to the console once, on purpose not through logging (log files keep it).
        print(f"livestream: broadcaster login for /broadcaster: user "
              f"'{config.broadcaster.username}', password '{password.generated}' "
              "(shown only now; set broadcaster.password in config.toml to choose one)",
              file=sys.stderr, flush=True)
    return password


def make_captchas(config: Config, client=None) -> Captchas | None:
    """Captchas pending in this process, or in Redis (`client`) for several workers."""
    if not config.captcha.enabled:
        return None
    answers = config.captcha.testing_answers_file
    if answers:
        log.warning("captcha.testing_answers_file is set: captcha answers are written to a "
                    "file. Never use this setting on a real server.")
    answers_file = config.resolve(answers) if answers else None
    if client is not None:
        from app.community.shared import RedisCaptchas

        return RedisCaptchas(config.captcha, client, answers_file)
    return Captchas(config.captcha, answers_file)


def init_compression(app: App) -> None:
    """Compress pages and JSON only: never video, and never a streamed response (the live chat
    frame and server-sent events), where a compressor's buffer would hold messages back."""
    app.config["COMPRESS_MIMETYPES"] = ["text/html", "application/json"]
    app.config["COMPRESS_STREAMS"] = False
    Compress(app)
