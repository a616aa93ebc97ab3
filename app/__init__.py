"""Application factory: configuration in, a wired Flask app out."""
from __future__ import annotations

import logging

from flask import Flask

from . import security
from .config import PROJECT_DIR, Config
from .events import Hub, publish_stream_status
from .stream import StreamState, ensure_dir
from .timeline import TimelineBuilder
from .views import api, errors, events, pages, stream_files


def create_app(config: Config, start_watcher: bool = True) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(PROJECT_DIR / "templates"),
        static_folder=str(PROJECT_DIR / "static"),
    )
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.config["LIVESTREAM"] = config
    ensure_dir(config.stream_dir)
    ensure_dir(config.state_dir)

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
    app.register_blueprint(stream_files.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(errors.bp)
    app.register_blueprint(api.bp)
    logging.getLogger(__name__).debug("app created for %s", config.source)
    return app
