"""The gevent WSGI server: one greenlet per connection, thousands of idle viewers are cheap."""
from __future__ import annotations

import logging
import resource
import socket
import time
import typing
from collections.abc import Callable
from email.utils import formatdate

import gevent
import gevent.event
from gevent.pywsgi import WSGIHandler, WSGIServer

from app.runtime.signals import stop_event
from app.web.clients import CIRCUIT_KEY, BadProxyLine, circuit_from_proxy_line

if typing.TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)


DATE_PRECISION_SECONDS = 60
SEND_BUFFER_BYTES = 256 * 1024  # ~2 s of 1 Mbit/s video; plenty for pages
CLOCK_HEADERS = {"date", "last-modified"}


def _header_name(name: str | bytes) -> str:
    return (name.decode("latin-1") if isinstance(name, bytes) else name).lower()


def rounded_http_date(now: float | None = None) -> bytes:
    """The Date header to the minute: exact server time helps fingerprint (clock skew)."""
    now = time.time() if now is None else now
    return formatdate(now - now % DATE_PRECISION_SECONDS, usegmt=True).encode("latin-1")


class QuietHandler(WSGIHandler):
    """No access log lines: URLs carry viewer tokens, which are secrets.

    Every socket operation gets a timeout, so a viewer that stops reading (or a client that
    opens a connection and sends nothing) is dropped instead of holding its greenlet forever.

    No exact clock either: Date is rounded to the minute and Last-Modified is dropped (file
    ETags, which hold mtimes too, are dropped by app.security), so responses do not reveal the
    server's clock precisely enough to link an onion service to a host by its clock skew.
    """

    def handle(self):
        self.socket.settimeout(self.server.socket_timeout)
        # Send small writes at once: pages go out as headers + body, and with Nagle's
        # algorithm a keep-alive client's delayed ACK held the body back about 40 ms.
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A fixed send buffer: Linux would grow it to 4 MiB for a client that stops
            # reading, so each stuck viewer could pin megabytes of kernel memory for a minute
            # before its writes stall long enough to be dropped.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except (OSError, AttributeError):
            pass
        super().handle()

    def read_requestline(self):
        """Idle keep-alive waits up to the socket timeout; once a request starts, its whole head
        (request line and headers) must arrive within `head_timeout`: a client dribbling one
        byte at a time (slowloris) cannot hold a connection open for ever.

        Between two requests of one connection the greenlet yields: requests pipelined in a
        buffer are otherwise served back to back without ever waiting on the socket, so one
        flooding connection starved every other viewer (real pages timed out after 5 s)."""
        gevent.sleep(0)
        self.rfile.peek(1)  # the first byte of the next request, or EOF, or socket timeout
        self._head_deadline = time.monotonic() + self.server.head_timeout
        with gevent.Timeout(self.server.head_timeout, socket.timeout("request head too slow")):
            return super().read_requestline()

    def read_request(self, raw_requestline):
        remaining = max(0.001, self._head_deadline - time.monotonic())
        with gevent.Timeout(remaining, SlowRequest("request head too slow")):
            return super().read_request(raw_requestline)

    def _handle_client_error(self, ex):
        """A malformed or too slow request is the client's fault: answer 400 and log only the
        kind of problem at debug level (the request line holds tokens, and a hostile client
        must not be able to fill the log)."""
        log.debug("bad request: %s", type(ex).__name__)
        return ("400", BAD_REQUEST)

    def _write(self, data):
        """Chunked writes without copying: the base class joins size, data and CRLF into a new
        buffer, which for thousands of viewers of one segment means thousands of copies."""
        if not data:
            return
        if not self.response_use_chunked:
            self._sendall(data)
            return
        parts = [memoryview(b"%x\r\n" % len(data)), memoryview(data), memoryview(b"\r\n")]
        while parts:
            sent = self.socket.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts[0])
                parts.pop(0)
            if parts and sent:
                parts[0] = parts[0][sent:]

    def finalize_headers(self):
        self.response_headers = [
            (name, value) for name, value in self.response_headers
            if _header_name(name) not in CLOCK_HEADERS
        ]
        date = rounded_http_date()
        self.response_headers.append((b"Date", date))
        self.provided_date = date
        super().finalize_headers()

    def log_request(self):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s", self.command, self.path.split("?", 1)[0],
                      (self.status or "").split(" ", 1)[0])


PROXY_LINE_MAX = 108  # the PROXY protocol's own limit for a v1 line


class CircuitHandler(QuietHandler):
    """The handler of the listener only our tor connects to (the onion service's target):
    every connection starts with tor's PROXY line naming its rendezvous circuit, which the
    requests on it carry as their client (app/web/clients.py). A connection without a valid
    line is dropped. The public listener never reads such a line: there it is a bad request.
    """

    circuit: int | None = None

    def handle(self):
        self.socket.settimeout(self.server.head_timeout)
        try:
            self.circuit = circuit_from_proxy_line(self.rfile.readline(PROXY_LINE_MAX))
        except (OSError, BadProxyLine) as exc:
            log.debug("connection without tor's PROXY line dropped: %s", exc)
            return
        super().handle()

    def get_environ(self):
        environ = super().get_environ()
        environ[CIRCUIT_KEY] = self.circuit
        return environ


class SlowRequest(ValueError):
    """The request head did not arrive in time (a ValueError: gevent answers 400)."""


BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain"
               b"\r\nContent-Length: 12\r\n\r\nBad request\n")


class Server(WSGIServer):
    """A WSGIServer carrying the two timeouts every QuietHandler reads."""

    def __init__(self, listener, application, socket_timeout: float, head_timeout: float,
                 **kwargs):
        super().__init__(listener, application, **kwargs)
        self.socket_timeout = socket_timeout
        self.head_timeout = head_timeout


def make_server(app: Callable, listener, socket_timeout: float, head_timeout: float,
                handler_class: type[QuietHandler] = QuietHandler) -> Server:
    """listener: (host, port) or a bound socket; socket_timeout: longest wait for one read or
    write (stream.send_timeout); head_timeout: longest time for a request's head once it
    started (server.header_timeout)."""
    raise_file_limit()
    backlog = {"backlog": 2048} if isinstance(listener, tuple) else {}  # a socket has its own
    return Server(listener, app, socket_timeout, head_timeout, handler_class=handler_class,
                  log=None, error_log=logging.getLogger("app.web.server.errors"), **backlog)


def raise_file_limit() -> None:
    """Each viewer is a socket: allow as many as the system lets this process have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.debug("open file limit raised from %d to %d", soft, hard)


def serve_forever(server: WSGIServer, services: Services,
                  stopping: gevent.event.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `stopping` is set), then stop the server and the services."""
    stopping = stop_event(stopping)
    server.start()
    try:
        stopping.wait()
    finally:
        log.info("shutting down")
        server.stop(timeout=2)
        services.stop()
