"""The stream itself: /stream.mp4 for plain <video>, the HLS playlist and its segments."""
from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, abort, redirect, request, send_file

from app.community.identity import TOKEN_PATTERN, Requester
from app.services import services
from app.stream.fanout import stream_mp4
from app.stream.folder import MIME_TYPES
from app.stream.playlist import with_query
from app.web.limits import PerViewerLimit
from app.web.requester import token_from_request

bp = Blueprint("stream_files", __name__)




def on_video_sent(who: Requester | None = None) -> Callable[[], None]:
    """A callback for every segment this requester receives: it marks them as watching.

    Requests without a token count as one anonymous viewer per connection.
    """
    who = who or services().identities.requester(token_from_request())
    audience = services().audience
    return lambda: audience.saw_video(who.viewer_id, who.tag)



@bp.route("/stream.mp4")
def mp4():
    config = services().config
    who = services().identities.requester(token_from_request())
    slots: PerViewerLimit = services().video_slots
    if not slots.acquire(who.viewer_id):
        return Response(
            f"This viewer already has {slots.per_viewer} video connections open "
            "(stream.max_connections_per_viewer). Close one and try again.\n", 429,
            mimetype="text/plain", headers={"Cache-Control": "no-store", "Retry-After": "5"})
    body = stream_mp4(services().stream, config.server.idle_timeout, on_video_sent(who))
    if body is None:
        slots.release(who.viewer_id)
        return Response("The stream is offline.\n", 503, mimetype="text/plain",
                        headers={"Cache-Control": "no-store", "Retry-After": "5"})
    return Response(slots.guard(who.viewer_id, body), mimetype="video/mp4",
                    direct_passthrough=True,
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def checked_token() -> str | None:
    """The address's token when it is well formed: safe to put back into URIs we serve."""
    token = request.args.get("token")
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


@bp.route("/stream.m3u8")
def playlist_alias():
    """The address to paste into VLC or mpv; the token rides along so they count as watching."""
    token = checked_token()
    query = f"?token={token}" if token else ""
    return redirect(f"/stream/{services().config.stream.playlist}{query}", 302)


@bp.route("/stream/<name>")
def stream_file(name: str):
    snap = services().stream.snapshot
    if name == services().config.stream.playlist:
        if snap.playlist is None:
            abort(404)
        token = checked_token()
        text = (with_query(snap.playlist.decode("utf-8", "replace"), f"token={token}")
                if token else snap.playlist)
        return Response(text, mimetype=MIME_TYPES[".m3u8"],
                        headers={"Cache-Control": "no-cache"})
    if name not in snap.listed:
        abort(404)  # only what the current playlist names: no traversal, no listing
    mimetype = MIME_TYPES.get(name[name.rfind("."):], "application/octet-stream")
    immutable = {"Cache-Control": "public, max-age=31536000, immutable"}
    if name == snap.init_name and snap.init is not None:
        return Response(snap.init, mimetype=mimetype, headers={"Cache-Control": "no-cache"})
    held = snap.segment(name)
    if token_from_request():  # a JS / HLS player fetching segments is watching too
        on_video_sent()()
    if held is not None:
        return Response(held.data, mimetype=mimetype, headers=immutable)
    path = services().stream.directory / name
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=mimetype, conditional=True)
    response.headers.update(immutable)
    return response
