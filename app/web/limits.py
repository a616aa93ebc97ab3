"""Limits on what one client can hold: request body size and concurrent video responses.

Werkzeug enforces `MAX_CONTENT_LENGTH` only when a request says its length up front; a chunked
body larger than the limit is silently cut short, so the view would act on a truncated form.
`BodyLimit` reads such a body (at most limit + 1 bytes) before the app sees it and refuses it
with 413 when it is too large. `PerViewerLimit` counts open long responses per viewer so one
token cannot open thousands of /stream.mp4 connections.
"""
from __future__ import annotations

import io
import typing
from collections.abc import Callable, Iterable, Iterator

TOO_LARGE = "livestream.body_too_large"


class BodyLimit:
    """WSGI middleware: a chunked (length-less) body becomes a counted one, or a 413."""

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if (not environ.get("CONTENT_LENGTH")
                and environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"):
            data = read_at_most(environ["wsgi.input"], self.max_bytes + 1)
            if len(data) > self.max_bytes:
                environ[TOO_LARGE] = True
                data = b""
                environ["HTTP_CONNECTION"] = "close"  # the rest of the body is never read
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            del environ["HTTP_TRANSFER_ENCODING"]
        return self.app(environ, start_response)


def read_at_most(stream: typing.BinaryIO, limit: int) -> bytes:
    """Read until EOF or `limit` bytes, whichever comes first."""
    parts, size = [], 0
    while size < limit:
        chunk = stream.read(min(65536, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class PerViewerLimit:
    """Counts open responses per viewer; entries go away with the last response."""

    def __init__(self, per_viewer: int):
        self.per_viewer = per_viewer
        self._open: dict[str, int] = {}

    def acquire(self, viewer_id: str) -> bool:
        held = self._open.get(viewer_id, 0)
        if held >= self.per_viewer:
            return False
        self._open[viewer_id] = held + 1
        return True

    def release(self, viewer_id: str) -> None:
        held = self._open.get(viewer_id, 1) - 1
        if held > 0:
            self._open[viewer_id] = held
        else:
            self._open.pop(viewer_id, None)

    def held(self, viewer_id: str) -> int:
        return self._open.get(viewer_id, 0)

    def __len__(self) -> int:
        return len(self._open)



class Guarded:
    """An iterator that runs `on_close` exactly once when the server closes the response.

    A class, not a generator: a generator that never started runs no `finally` when closed,
    and a client that hangs up before the first byte would keep its slot forever.
    """

    def __init__(self, body: Iterator[bytes], on_close: Callable[[], None]):
        self._body = body
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Guarded:
        return self

    def __next__(self) -> bytes:
        return next(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                on_close()

    def __del__(self) -> None:  # a response dropped without close() still frees its slot
        self.close()


class StreamSlots:
    """Caps live chat frames, in total and per viewer, so memory and sockets stay bounded."""

    def __init__(self, total: int, per_viewer: int):
        self.total = total
        self.per_viewer = per_viewer
        self.open = 0
        self._by_viewer: dict[str, int] = {}

    def acquire(self, viewer_id: str) -> bool:
        held = self._by_viewer.get(viewer_id, 0)
        if self.open >= self.total or held >= self.per_viewer:
            return False
        self.open += 1
        self._by_viewer[viewer_id] = held + 1
        return True

    def release(self, viewer_id: str) -> None:
        self.open -= 1
        held = self._by_viewer.get(viewer_id, 1) - 1
        if held:
            self._by_viewer[viewer_id] = held
        else:
            self._by_viewer.pop(viewer_id, None)
