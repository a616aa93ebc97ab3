"""/events: the push channel for JavaScript viewers (server-sent events)."""
from __future__ import annotations

from flask import Blueprint, Response, request

from app.services import services
from app.web.limits import Guarded, StreamSlots
from app.web.requester import client, over_budget
from app.web.views.api import push_holder, too_many_push

bp = Blueprint("events", __name__)

KEEPALIVE = b": keep-alive\n\n"



@bp.route("/events")
def events():
    last_id = request.headers.get("Last-Event-ID", type=int)
    if last_id is None:
        last_id = request.args.get("since", type=int)

    channel = services().hub  # resolved now: the body runs after the request context is gone
    slots: StreamSlots = services().push_slots
    holder, source = push_holder(), client()
    budgets = services().budgets
    if not budgets.hold(source, "push"):
        return over_budget("push")
    if not slots.acquire(holder):
        budgets.release(source, "push")
        return too_many_push(slots)

    def release() -> None:
        slots.release(holder)
        budgets.release(source, "push")

    def body():
        yield b"retry: 2000\n\n"
        for event in channel.listen(last_id):
            yield KEEPALIVE if event is None else event.sse()

    # Guarded: the slot comes back however the response ends (even before its first byte)
    return Response(Guarded(body(), release), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
