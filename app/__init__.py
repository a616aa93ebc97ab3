"""Application factory: configuration in, a wired Flask app out."""
from __future__ import annotations

import logging
import sys

from flask import Flask
from flask_compress import Compress

from app.community.hub import Hub, publish_stream_status
from app.config import PROJECT_DIR, Config
from app.stream.timeline import TimelineBuilder
from app.stream.watcher import StreamState
from app.web import security
from app.web.limits import BodyLimit
from app.web.views import api, broadcaster, chat, errors, events, pages, stream_files


def create_app(config: Config, start_watcher: bool = True) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(PROJECT_DIR / "templates"),
        static_folder=str(PROJECT_DIR / "static"),
    )
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.wsgi_app = BodyLimit(app.wsgi_app, config.server.max_body_bytes)
    app.config["LIVESTREAM"] = config
    config.stream_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.mkdir(parents=True, exist_ok=True)

    state = StreamState(config.stream_dir, config.stream)
    app.extensions["stream"] = state
    hub = Hub()
    app.extensions["events"] = hub
    app.extensions["timeline"] = TimelineBuilder()
    if start_watcher:
        state.start()
        publish_stream_status(state, hub)
    else:
        state.refresh()

    security.init_app(app)
    init_compression(app)
    init_community(app, config, hub, start_watcher)
    stream_files.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(errors.bp)
    app.register_blueprint(api.bp)
    chat.init_app(app)
    broadcaster.init_app(app)
    logging.getLogger(__name__).debug("app created for %s", config.source)
    return app


def init_compression(app: Flask) -> None:
    """Compress pages and JSON only: never video, and never a streamed response (the live chat
    frame and server-sent events), where a compressor's buffer would hold messages back."""
    app.config["COMPRESS_MIMETYPES"] = ["text/html", "application/json"]
    app.config["COMPRESS_STREAMS"] = False
    Compress(app)


def init_community(app: Flask, config: Config, hub: Hub, start_background: bool) -> None:
    """The store, identities, presence, captchas and chat: everything beside the video."""
    from app.community.captcha import Captchas
    from app.community.chat import Chat
    from app.community.identity import BroadcasterPassword, Identities
    from app.community.presence import Audience, publish_viewer_count
    from app.community.store import open_store

    store = open_store(config.state_dir, config.chat.history, config.chat.shown,
                       config.viewers.max_stored, config.viewers.cache_size)
    identities = Identities(store)
    audience = Audience(config.viewers)
    captchas = None
    if config.captcha.enabled:
        answers = config.captcha.testing_answers_file
        captchas = Captchas(config.captcha, config.resolve(answers) if answers else None)
        if answers:
            logging.getLogger(__name__).warning(
                "captcha.testing_answers_file is set: captcha answers are written to a file. "
                "Never use this setting on a real server.")
    password = BroadcasterPassword(store, config.broadcaster)
    if password.generated:
        # Printed to the console once, on purpose not through logging (log files keep it).
        print(f"livestream: broadcaster login for /broadcaster: user "
              f"'{config.broadcaster.username}', password '{password.generated}' "
              "(shown only now; set broadcaster.password in config.toml to choose one)",
              file=sys.stderr, flush=True)
    app.extensions.update(
        store=store, identities=identities, audience=audience, captchas=captchas,
        broadcaster_password=password,
        chat=Chat(store, identities, hub, config.chat, config.broadcaster, captchas))
    if start_background:
        if captchas is not None:
            captchas.start()
        publish_viewer_count(audience, hub)
