"""The stream itself: /stream.mp4 for plain <video>, the HLS playlist and its segments."""
from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, abort, current_app, redirect, send_file

from app.community.identity import Requester, token_from_request
from app.stream.fanout import stream_mp4
from app.stream.watcher import StreamState
from app.web.limits import PerViewerLimit

bp = Blueprint("stream_files", __name__)

MIME = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4", ".m4s": "video/iso.segment"}


def state() -> StreamState:
    return current_app.extensions["stream"]


def on_video_sent(who: Requester | None = None) -> Callable[[], None]:
    """A callback for every segment this requester receives: it marks them as watching.

    Requests without a token count as one anonymous viewer per connection.
    """
    who = who or current_app.extensions["identities"].requester(token_from_request())
    audience = current_app.extensions["audience"]
    return lambda: audience.saw_video(who.viewer_id, who.tag)


def init_app(app) -> None:
    per_viewer = app.config["LIVESTREAM"].stream.max_connections_per_viewer
    app.extensions["video_slots"] = PerViewerLimit(per_viewer)
    app.register_blueprint(bp)


@bp.route("/stream.mp4")
def mp4():
    config = current_app.config["LIVESTREAM"]
    who = current_app.extensions["identities"].requester(token_from_request())
    slots: PerViewerLimit = current_app.extensions["video_slots"]
    if not slots.acquire(who.viewer_id):
        return Response(
            f"This viewer already has {slots.per_viewer} video connections open "
            "(stream.max_connections_per_viewer). Close one and try again.\n", 429,
            mimetype="text/plain", headers={"Cache-Control": "no-store", "Retry-After": "5"})
    body = stream_mp4(state(), config.server.idle_timeout, on_video_sent(who))
    if body is None:
        slots.release(who.viewer_id)
        return Response("The stream is offline.\n", 503, mimetype="text/plain",
                        headers={"Cache-Control": "no-store", "Retry-After": "5"})
    return Response(slots.guard(who.viewer_id, body), mimetype="video/mp4",
                    direct_passthrough=True,
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.route("/stream.m3u8")
def playlist_alias():
    return redirect(f"/stream/{current_app.config['LIVESTREAM'].stream.playlist}", 302)


@bp.route("/stream/<name>")
def stream_file(name: str):
    snap = state().snapshot
    if name == current_app.config["LIVESTREAM"].stream.playlist:
        if snap.playlist is None:
            abort(404)
        return Response(snap.playlist, mimetype=MIME[".m3u8"],
                        headers={"Cache-Control": "no-cache"})
    if name not in snap.listed:
        abort(404)  # only what the current playlist names: no traversal, no listing
    mimetype = MIME.get(name[name.rfind("."):], "application/octet-stream")
    immutable = {"Cache-Control": "public, max-age=31536000, immutable"}
    if name == snap.init_name and snap.init is not None:
        return Response(snap.init, mimetype=mimetype, headers={"Cache-Control": "no-cache"})
    held = snap.segment(name)
    if token_from_request():  # a JS / HLS player fetching segments is watching too
        on_video_sent()()
    if held is not None:
        return Response(held.data, mimetype=mimetype, headers=immutable)
    path = state().directory / name
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=mimetype, conditional=True)
    response.headers.update(immutable)
    return response
