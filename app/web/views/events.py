"""/events: the push channel for JavaScript viewers (server-sent events)."""
from __future__ import annotations

from flask import Blueprint, Response, request

from app.services import services

bp = Blueprint("events", __name__)

KEEPALIVE = b": keep-alive\n\n"



@bp.route("/events")
def events():
    last_id = request.headers.get("Last-Event-ID", type=int)
    if last_id is None:
        last_id = request.args.get("since", type=int)

    channel = services().hub  # resolved now: the body runs after the request context is gone

    def body():
        yield b"retry: 2000\n\n"
        for event in channel.listen(last_id):
            yield KEEPALIVE if event is None else event.sse()

    return Response(body(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
