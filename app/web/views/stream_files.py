"""The stream itself: /stream.mp4 for plain <video>, the HLS playlist and its segments."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from flask import Blueprint, Response, abort, redirect, request, send_file

from app.community.identity import TOKEN_PATTERN, Requester
from app.services import services
from app.stream.fanout import stream_mp4
from app.stream.folder import MASTER_PLAYLIST, MIME_TYPES
from app.stream.fragments import GONE, MAX_INDEX, find_fragment, pushed
from app.stream.playlist import with_query
from app.stream.watcher import Snapshot
from app.web.limits import Guarded, PerViewerLimit
from app.web.requester import client, over_budget, token_from_request
from app.web.views.api import push_holder

bp = Blueprint("stream_files", __name__)


def on_video_sent(who: Requester | None = None) -> Callable[[], None]:
    """A callback for every segment this requester receives: it tells presence, which lists
    a viewer only after video reached them over time (app/community/presence.py), and at
    most `budgets.watching` viewers per client.

    Requests without a token count as one anonymous viewer per connection.
    """
    who = who or services().identities.requester(token_from_request(), check_ban=False)
    audience, budgets, source = services().audience, services().budgets, client()
    seconds = services().config.viewers.watching_seconds

    def sent() -> None:
        if budgets.may_watch(source, who.viewer_id, seconds):
            audience.saw_video(who.viewer_id, who.tag)

    return sent


def long_video(body_for: Callable[[Requester], Iterator[bytes] | None]) -> Response:
    """A long video response, within the client's video budget and the viewer's
    connections (stream.max_connections_per_viewer); 503 when `body_for` has nothing."""
    who = services().identities.requester(token_from_request(), check_ban=False)
    slots: PerViewerLimit = services().video_slots
    source, budgets = client(), services().budgets
    if not budgets.hold(source, "video"):
        return over_budget("video")
    if not slots.acquire(who.viewer_id):
        budgets.release(source, "video")
        return Response(
            f"This viewer already has {slots.per_viewer} video connections open "
            "(stream.max_connections_per_viewer). Close one and try again.\n", 429,
            mimetype="text/plain", headers={"Cache-Control": "no-store", "Retry-After": "5"})
    body = body_for(who)

    def release() -> None:
        slots.release(who.viewer_id)
        budgets.release(source, "video")

    if body is None:
        release()
        return Response("The stream is offline.\n", 503, mimetype="text/plain",
                        headers={"Cache-Control": "no-store", "Retry-After": "5"})
    return Response(Guarded(body, release), mimetype="video/mp4",
                    direct_passthrough=True,
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.route("/stream.mp4")
def mp4():
    timeout = services().config.server.idle_timeout
    return long_video(lambda who: stream_mp4(
        services().stream, timeout, on_video_sent(who), quality=request.args.get("quality"),
        deliveries=services().deliveries))


def checked_token() -> str | None:
    """The address's token when it is well formed: safe to put back into URIs we serve."""
    token = request.args.get("token")
    return token if token and TOKEN_PATTERN.fullmatch(token) else None


@bp.route("/stream.m3u8")
def playlist_alias():
    """The address to paste into VLC or mpv: the master playlist (every rendition) when a
    source wrote one, or the one rendition `?quality=` chose. The token rides along (checked,
    never the raw query) so the player counts as watching."""
    snap = services().stream.snapshot
    quality = request.args.get("quality")
    chosen = next((v.uri for v in snap.qualities[1:] if v.name == quality), None)
    name = chosen or (MASTER_PLAYLIST if snap.master is not None
                      else services().config.stream.playlist)
    token = checked_token()
    query = f"?token={token}" if token else ""
    return redirect(f"/stream/{name}{query}", 302)


def playlist_response(raw: bytes) -> Response:
    """A playlist (master or media) as served: with the viewer's checked token on every URI
    it names, since HLS players drop the playlist's query when they resolve them."""
    token = checked_token()
    text = with_query(raw.decode("utf-8", "replace"), f"token={token}") if token else raw
    return Response(text, mimetype=MIME_TYPES[".m3u8"], headers={"Cache-Control": "no-cache"})


def has_part(snap, msn: int, part: int | None) -> bool:
    """Whether a playlist of this snapshot lists segment `msn` (or, with `part`, that part of
    it): what a low-latency HLS player's blocking reload waits for."""
    if not snap.online or (snap.segments and snap.segments[-1].sequence >= msn):
        return True
    partial = snap.partial
    if partial is None:
        return bool(snap.segments) and snap.segments[-1].sequence >= msn
    if partial.sequence != msn:
        return partial.sequence > msn
    return part is not None and partial.parts > part


def wait_until(quality: str, ready: Callable[[Snapshot], bool]) -> Snapshot | None:
    """Wait (at most three target durations) until `ready` holds for the rendition's
    snapshot; the snapshot then, or None when the client is over its budget. Every waiting
    request holds one of its client's push connections and a push slot."""
    state, budgets, source = services().stream, services().budgets, client()
    slots, holder = services().push_slots, push_holder()
    snap = state.snapshot.view(quality)
    if ready(snap):
        return snap
    if not budgets.hold(source, "push"):
        return None
    if not slots.acquire(holder):  # the process's own cap on waiting responses
        budgets.release(source, "push")
        return None
    try:
        deadline = time.monotonic() + 3 * snap.target_duration
        while not ready(snap) and time.monotonic() < deadline:
            state.wait(deadline - time.monotonic())
            snap = state.snapshot.view(quality)
    finally:
        slots.release(holder)
        budgets.release(source, "push")
    return snap


@bp.route("/fragments")
def fragments_pushed():
    """The JavaScript player following the live edge: one response pushing every fragment
    from `k` of segment `seq` of generation `gen` on, each framed, as it is written
    (app/stream/fragments.py). One of the viewer's video connections, like /stream.mp4."""
    generation, sequence, index = (request.args.get(name, type=int)
                                   for name in ("gen", "seq", "k"))
    if None in (generation, sequence, index) or not 0 <= sequence < 2 ** 53 \
            or not 0 <= index <= MAX_INDEX:
        abort(400)
    quality = request.args.get("quality") or ""
    state, timeout = services().stream, services().config.server.idle_timeout
    if find_fragment(state.snapshot.view(quality), generation, sequence, index) == GONE:
        abort(404)
    return long_video(lambda who: pushed(state, quality, generation, sequence, index, timeout,
                                         on_video_sent(who)))


@bp.route("/stream/<name>")
def stream_file(name: str):
    top = services().stream.snapshot
    if name == MASTER_PLAYLIST and top.master is not None:
        return playlist_response(top.master)
    for snap in top.views:
        playlist = (services().config.stream.playlist if snap is top
                    else next((v.uri for v in top.qualities if v.name == snap.quality), None))
        if name == playlist:
            msn = request.args.get("_HLS_msn", type=int)
            if msn is not None and 0 <= msn < 2 ** 53:
                part = request.args.get("_HLS_part", type=int)
                part = part if part is not None and part >= 0 else None
                snap = wait_until(snap.quality if snap is not top else "",
                                  lambda s, msn=msn, part=part: has_part(s, msn, part))
                if snap is None:
                    return over_budget("push")
            if snap.playlist is None:
                abort(404)
            return playlist_response(snap.playlist)
        if name in snap.listed:
            break
    else:
        abort(404)  # only what the current playlists name: no traversal, no listing
    mimetype = MIME_TYPES.get(name[name.rfind("."):], "application/octet-stream")
    immutable = {"Cache-Control": "public, max-age=31536000, immutable"}
    if name == snap.init_name:  # only the scrubbed copy in memory, never the file itself
        if snap.init is None:
            abort(404)
        return Response(snap.init, mimetype=mimetype, headers={"Cache-Control": "no-cache"})
    held = snap.segment(name)
    # a JS / HLS player fetching segments is watching too; a HEAD received no video
    if token_from_request() and request.method == "GET":
        on_video_sent()()
    if held is not None:
        return Response(held.data, mimetype=mimetype, headers=immutable)
    path = services().stream.directory / name
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=mimetype, conditional=True)
    response.headers.update(immutable)
    return response
