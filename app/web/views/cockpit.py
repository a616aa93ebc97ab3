"""/broadcaster/cockpit and /metrics: what the server knows about the stream and its viewers.

The cockpit is a frame of the broadcaster page that reloads itself every few seconds (no
JavaScript): the stream's state and where it comes from, each rendition's health, each
rendition's viewers as the fan-out sees them, warnings in plain words, charts of the last
hour and day, and the ways in. /metrics gives the same figures to Prometheus, behind the same
login (a scrape config's basic_auth): never on the public side.
"""
from __future__ import annotations

import os
import time

from flask import Blueprint, Response, current_app, render_template

from app.cockpit.charts import Series, svg_chart
from app.cockpit.metrics import CONTENT_TYPE, Reading, exposition
from app.config import Config
from app.services import Services, services
from app.sources.party import control
from app.stream import health as stream_health
from app.stream import lock
from app.stream.deliveries import RenditionViewers
from app.web.views.backstage import auth, bp, private_way_only

metrics_bp = Blueprint("metrics", __name__)
metrics_bp.before_request(private_way_only)
REFRESH_SECONDS = 5
CHARTS = [  # (series, title, unit)
    ([Series("viewers:", "")], "Viewers of /stream.mp4 by rendition", "viewers"),
    ([Series("chat_posts", "posts")], "Chat messages per 10 s", "posts"),
    ([Series("incoming_kbps", "in")], "Written by the source (all renditions)", "kbit/s"),
    ([Series("outgoing_mbps", "out")], "Sent to /stream.mp4 viewers", "Mbit/s"),
    ([Series("cpu_percent", "CPU")], "Server CPU (100 = one core)", "%"),
    ([Series("memory_mib", "memory")], "Server memory", "MiB"),
]


def reading(s: Services) -> Reading:
    snapshot = s.stream.snapshot
    # one name per rendition: the top one is "source" whether or not the master names it
    viewers = {quality or "source": row for quality, row in
               s.deliveries.report(snapshot).items()}
    ready = s.captchas.ready if s.captchas is not None else None
    started = time.perf_counter()
    s.store.recent_messages()
    store_seconds = time.perf_counter() - started
    figures = Reading(
        online=snapshot.online, generation=snapshot.generation, present=s.audience.count(),
        health=stream_health.assess(snapshot, viewers, s.stream.directory, ready),
        viewers=viewers, drops_total={quality or "source": count for quality, count in
                                      s.deliveries.drops_total.items()},
        sent_bytes_total=s.deliveries.bytes_sent, chat_posts_total=s.chat.posted,
        chat_refused_total=s.chat.refused, captchas_ready=ready, store_seconds=store_seconds)
    # one of `--workers N` (the supervisor names each; the config file may say 1)
    if os.environ.get("LIVESTREAM_WORKER") is not None and s.history is not None:
        every_worker(figures, s)
    for source in s.extra_figures:
        try:
            figures.extra.update(source())
        except Exception:  # noqa: BLE001 - a job that cannot answer must not break a scrape
            continue
    figures.extra["livestream_budget_refusals_total"] = float(s.budgets.refusals)
    return figures


TOR_FIGURES = (  # tor's own onion-service figures worth a line on the cockpit
    ("livestream_tor_hs_intro_num_total", "Introductions tor received (since tor started)"),
    ("livestream_tor_hs_intro_rejected_intro_req_count_total", "Introductions tor refused"),
    ("livestream_tor_hs_rdv_num_total", "Rendezvous circuits (since tor started)"),
    ("livestream_tor_hs_rdv_established_count", "Rendezvous circuits open now"),
    ("livestream_tor_hs_pow_suggested_effort", "Proof-of-work effort tor asks of clients"),
    ("livestream_tor_hs_rdv_pow_pqueue_count", "Introductions waiting in the proof-of-work queue"),
)


def process_figures() -> dict[str, float]:
    """What a soak watches for leaks: open file descriptors and live greenlets. Counting
    greenlets walks the heap (a few milliseconds per 100,000 objects), so it is done here,
    when the broadcaster's Prometheus asks, and nowhere else."""
    import gc

    import greenlet

    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    return {"livestream_open_fds": float(fds),
            "livestream_greenlets": float(sum(
                1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet)))}


def every_worker(figures: Reading, s: Services) -> None:
    """Several workers: the viewer-side counts and totals of the newest 10-s point, which
    holds every worker's own (each worker's viewers are its own)."""
    now = time.time()
    points = s.history.points(now - 30)
    if not points:
        return
    # the newest point every worker has written: the latest may still lack one for a moment
    settled = [p for p in points if now - p.at >= 2] or points
    latest = settled[-1].figures
    for key, value in latest.items():
        kind, _, quality = key.partition(":")  # the sampler names the top one "source" too
        if kind in ("viewers", "keeping_up"):
            row = figures.viewers.setdefault(quality, RenditionViewers(quality))
            setattr(row, "watching" if kind == "viewers" else kind, int(value))
        elif kind == "dropped_total":
            figures.drops_total[quality] = int(value)
    figures.sent_bytes_total = int(latest.get("sent_bytes_total", figures.sent_bytes_total))
    figures.chat_posts_total = int(latest.get("chat_posts_total", figures.chat_posts_total))
    figures.chat_refused_total = int(latest.get("chat_refused_total",
                                                figures.chat_refused_total))


def ways_in(config: Config) -> dict:
    """The onion address, the RTMP address and key, and OBS settings that fit."""
    from app.onion.service import stored_address
    from app.sources.rtmp.keys import key_path

    key = None
    if config.ingest.enabled or key_path(config.state_dir).exists():
        from app.sources.rtmp.keys import load_key

        key = load_key(config.state_dir)
    top = config.stream.renditions[0]
    return {"onion": stored_address(config) if config.tor.enabled else None,
            "rtmp_port": config.ingest.port, "rtmp_app": config.ingest.app, "key": key,
            "keyframe_seconds": 1,  # as stream.sh: Firefox plays one interval behind
            "video_kbps": top.video_kbps or config.ingest.transcode_video_kbps,
            "renditions": config.stream.renditions}


@bp.route("/cockpit")
@auth.login_required
def frame():
    s = services()
    snapshot = s.stream.snapshot
    figures = reading(s)
    now = time.time()
    charts = []
    if s.history is not None:
        for span, coarse in ((3600, False), (86400, False)):
            points = s.history.points(now - span, coarse)
            charts.append((span, [svg_chart(points, series, title, unit, now, span)
                                  for series, title, unit in CHARTS]))
    try:
        party = control.send(s.config.state_dir, "status", timeout=1.0)["status"]
    except control.ControlError:
        party = None
    body = render_template(
        "cockpit.html", snap=snapshot, figures=figures, refresh=REFRESH_SECONDS,
        uptime=int(snapshot.uptime()) if snapshot.uptime() is not None else None,
        restarts=max(0, snapshot.generation - s.stream.first_generation - 1),
        source=lock.holder(s.stream.directory), party=party, charts=charts,
        ways=ways_in(s.config), now=now, tor_figures=TOR_FIGURES,
        tor_figures_shown=any(name in figures.extra for name, _ in TOR_FIGURES))
    response = current_app.make_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response


@metrics_bp.route("/metrics")
@auth.login_required
def metrics():
    figures = reading(services())
    figures.extra.update(process_figures())  # only here: it walks the heap
    return Response(exposition(figures), mimetype=None,
                    content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
