"""/metrics in the Prometheus text format: the cockpit's figures for a Grafana board.

Names and meanings are listed in docs/metrics.md. The exposition format itself is written by
`prometheus_client` from figures worked out when a scrape arrives (a custom collector over a
registry of its own: nothing global, nothing counted on the video path)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.stream.deliveries import RenditionViewers
from app.stream.health import Health

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Reading:
    """Everything one scrape shows."""

    online: bool
    generation: int
    present: int  # viewers on the page (the viewer list's count)
    health: Health
    viewers: dict[str, RenditionViewers]
    drops_total: dict[str, int]
    sent_bytes_total: int
    chat_posts_total: int
    chat_refused_total: int
    captchas_ready: int | None
    store_seconds: float
    extra: dict[str, float] = field(default_factory=dict)


class _Collector:
    def __init__(self, reading: Reading):
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        yield GaugeMetricFamily("livestream_stream_online", "1 while the stream is live",
                                value=int(r.online))
        yield GaugeMetricFamily("livestream_stream_generation",
                                "broadcast number: grows at every restart", value=r.generation)
        yield GaugeMetricFamily("livestream_present_viewers",
                                "viewers on the page (the viewer list's count)", value=r.present)
        by_rendition = [
            ("livestream_viewers", "open /stream.mp4 responses", lambda v: v.watching),
            ("livestream_viewers_keeping_up",
             "/stream.mp4 viewers at most one segment behind live", lambda v: v.keeping_up),
            ("livestream_viewer_behind_seconds_max",
             "how far behind live the furthest /stream.mp4 viewer is", lambda v: v.worst),
            ("livestream_viewers_dropped_recent",
             "/stream.mp4 viewers dropped for falling behind in the last 10 minutes",
             lambda v: v.dropped)]
        for name, text, value in by_rendition:
            family = GaugeMetricFamily(name, text, labels=["rendition"])
            for quality, row in sorted(r.viewers.items()):
                family.add_metric([quality], value(row))
            yield family
        drops = CounterMetricFamily("livestream_viewers_dropped",
                                    "/stream.mp4 viewers dropped for falling behind",
                                    labels=["rendition"])
        for quality, count in sorted(r.drops_total.items()):
            drops.add_metric([quality], count)
        yield drops
        yield CounterMetricFamily("livestream_sent_bytes", "media bytes written to /stream.mp4",
                                  value=r.sent_bytes_total)
        stream = [
            ("livestream_segment_bitrate_kbps", "bitrate of the held segments",
             lambda h: h.bitrate_kbps),
            ("livestream_segment_duration_seconds", "mean segment duration",
             lambda h: h.duration_avg),
            ("livestream_segment_target_seconds", "the playlist's target duration",
             lambda h: h.target),
            ("livestream_keyframe_interval_seconds", "longest segment (each starts at a keyframe)",
             lambda h: h.keyframe_interval),
            ("livestream_frame_rate", "frames per second of the recent segments", lambda h: h.fps),
            ("livestream_source_real_time_ratio",
             "media seconds written per wall second (below 0.9: the encoder cannot keep up)",
             lambda h: h.real_time if h.real_time is not None else float("nan"))]
        for name, text, value in stream:
            family = GaugeMetricFamily(name, text, labels=["rendition"])
            for row in r.health.renditions:
                family.add_metric([row.quality], value(row))
            yield family
        yield GaugeMetricFamily("livestream_warnings", "warnings the cockpit shows now",
                                value=len(r.health.warnings))
        yield CounterMetricFamily("livestream_chat_posts", "chat messages taken",
                                  value=r.chat_posts_total)
        yield CounterMetricFamily("livestream_chat_refused",
                                  "chat messages refused (flood, captcha, filters, bans)",
                                  value=r.chat_refused_total)
        if r.captchas_ready is not None:
            yield GaugeMetricFamily("livestream_captchas_ready", "captcha images ready",
                                    value=r.captchas_ready)
        yield GaugeMetricFamily("livestream_store_latency_seconds",
                                "time one read of the chat store took during this scrape",
                                value=r.store_seconds)
        for name, value in sorted(r.extra.items()):
            yield GaugeMetricFamily(name, name.replace("_", " "), value=value)


def exposition(reading: Reading) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(reading))
    return generate_latest(registry)
