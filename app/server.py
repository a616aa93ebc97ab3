"""The gevent WSGI server: one greenlet per connection, thousands of idle viewers are cheap."""
from __future__ import annotations

import logging
import signal
import socket

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer

log = logging.getLogger(__name__)


class QuietHandler(WSGIHandler):
    """No access log lines: URLs carry viewer tokens, which are secrets."""

    def handle(self):
        # Send small writes at once: pages go out as headers + body, and with Nagle's
        # algorithm a keep-alive client's delayed ACK held the body back about 40 ms.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        return super().handle()

    def log_request(self):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s", self.command, self.path.split("?", 1)[0],
                      (self.status or "").split(" ", 1)[0])


def make_server(app, host: str, port: int) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=QuietHandler, log=None,
                      error_log=logging.getLogger("app.server.errors"))


def serve_forever(server: WSGIServer, on_stop=()) -> None:
    """Run until SIGINT/SIGTERM, then stop accepting and run the clean-up callbacks."""
    stopping = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stopping.set)
    server.start()
    try:
        stopping.wait()
    finally:
        log.info("shutting down")
        server.stop(timeout=2)
        for callback in on_stop:
            try:
                callback()
            except Exception:  # clean-up must go on whatever one step does
                log.exception("error during shutdown")
