"""The one services object: every component the app runs, built by `create_app`, started and
stopped in one place, and reached by views and the CLI through `services()`.

Building does no work in the background; `start()` starts the watcher, the push publishers and
the captcha filler, and `stop()` stops them, anything adopted with `adopt()` (the onion
service, the ingest, a demo source) and closes the store. Tests build an app and start only
what they need (`services.stream.start()`, say), or everything with `start()`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from flask import Flask, current_app

from app.cockpit.history import History
from app.cockpit.sampler import Sampler
from app.community.captcha import Captchas
from app.community.chat import Chat
from app.community.hub import Hub
from app.community.identity import BroadcasterPassword, BroadcasterSessions, Identities
from app.community.invites import InviteBook
from app.community.moderators import Moderation
from app.community.presence import Audience, publish_viewer_count
from app.community.store import Store
from app.config import Config
from app.hooks.bus import HookBus, is_dispatcher
from app.stream.clock import StreamClock
from app.stream.deliveries import Deliveries
from app.stream.status import publish_stream_status
from app.stream.timeline import TimelineBuilder
from app.stream.watcher import StreamState
from app.web.budgets import ClientBudgets
from app.web.limits import PerViewerLimit, StreamSlots

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    stream: StreamState
    timeline: TimelineBuilder
    hub: Hub
    store: Store
    identities: Identities
    audience: Audience
    captchas: Captchas | None
    password: BroadcasterPassword
    chat: Chat
    sessions: BroadcasterSessions
    csrf_token: str
    video_slots: PerViewerLimit
    chat_slots: StreamSlots
    push_slots: StreamSlots  # /events and long-polled /api/playlist
    clock: StreamClock
    budgets: ClientBudgets  # what one client (circuit, address) may take
    deliveries: Deliveries = field(default_factory=Deliveries)  # each /stream.mp4's health
    history: History | None = None  # the cockpit's figures over time
    hooks: HookBus = field(default_factory=HookBus)  # events for the streamer's bots
    invites: InviteBook | None = None  # [access] invite_only: who opened an invite link
    moderation: Moderation | None = None  # the broadcaster's moderators
    # more figures for /metrics from jobs beside the app (the onion service's tor traffic)
    extra_figures: list[Callable[[], dict[str, float]]] = field(default_factory=list)
    _greenlets: list[gevent.Greenlet] = field(default_factory=list)
    _adopted: list[Callable[[], object]] = field(default_factory=list)

    def start(self) -> None:
        """Everything that runs in the background of a serving app."""
        self.stream.start()
        relay = self.hub.start()  # the Redis pub/sub relay of a shared hub; None otherwise
        if relay is not None:
            self._greenlets.append(relay)
        self._greenlets.append(publish_stream_status(self.stream, self.hub.publish, self.clock))
        self._greenlets.append(publish_viewer_count(self.audience, self.hub))
        if self.captchas is not None:
            self.captchas.start()
        if self.history is not None:
            sampler = Sampler(self.history, self.stream, self.deliveries, self.chat)
            self._greenlets.append(gevent.spawn(sampler.run))
        if is_dispatcher():
            self._start_hooks()

    def _start_hooks(self) -> None:
        """The event and control sockets, the webhooks and the stream's and audience's
        events: in one process only (worker 0 of several), so each event is said once."""
        # here, not at the top: requests (for webhooks) must come after the CLI's monkey-patching
        from app.hooks.control_socket import ControlSocket
        from app.hooks.event_socket import EventSocket
        from app.hooks.happenings import follow_audience, follow_stream
        from app.hooks.webhooks import Webhooks

        settings, state_dir = self.config.hooks, self.config.state_dir
        sockets = []
        if settings.events_socket:
            sockets.append(EventSocket(state_dir))
        if settings.control_socket:
            sockets.append(ControlSocket(state_dir, self))
        for server in sockets:
            try:
                self._greenlets.append(server.start())
            except OSError as exc:  # a state folder path too long for a Unix socket, say
                log.warning("%s not opened: %s ([hooks] in the config turns it off)",
                            server.path, exc)
                continue
            self.adopt(server.stop)
            if isinstance(server, EventSocket):
                self.hooks.sinks.append(server)
        hooked = self.config.webhooks
        if hooked.urls:
            webhooks = Webhooks(hooked.urls, hooked.secret, hooked.tor_socks)
            self._greenlets += webhooks.start()
            self.hooks.sinks.append(webhooks)
        if self.hooks.sinks:
            relay = self.hooks.start()
            if relay is not None:
                self._greenlets.append(relay)
            self._greenlets.append(follow_stream(self.stream, self.hooks.emit))
            self._greenlets.append(follow_audience(self.audience, self._name_of,
                                                   self.hooks.emit))

    def _name_of(self, viewer_id: str) -> str:
        viewer = self.store.viewer(viewer_id)
        return (viewer.name if viewer else "") or "Anonymous"

    def adopt(self, stop: Callable[[], object]) -> None:
        """A job started beside the app (onion service, ingest, demo source): `stop()` ends
        it first, newest first."""
        self._adopted.append(stop)

    def stop(self) -> None:
        """Stop what was started, in reverse order; every step runs whatever the others do."""
        steps = [*reversed(self._adopted), lambda: gevent.killall(self._greenlets),
                 self.stream.stop]
        if self.captchas is not None:
            steps.append(self.captchas.stop)
        steps.append(self.store.close)
        if self.history is not None:
            steps.append(self.history.close)
        self._adopted, self._greenlets = [], []
        for step in steps:
            try:
                step()
            except Exception:  # clean-up must go on whatever one step does
                log.exception("error while stopping")


class App(Flask):
    """Flask with its services as typed attributes instead of string keys."""

    services: Services
    message_html: Callable  # each chat message rendered once (app/web/views/chat.py)


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    return current_app.services  # type: ignore[attr-defined]
