"""Charts as server-rendered SVG: no script, nothing from elsewhere, and no `style`
attribute (the page's Content-Security-Policy allows none): presentation attributes only.
Times are shown relative to now ("-24 h"), which says nothing of the host's time zone."""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from app.cockpit.history import Point

COLOURS = ["#a970ff", "#4cc38a", "#f0b429", "#e5484d", "#3e9bd8", "#c06ad8"]


@dataclass(frozen=True)
class Series:
    key: str  # a figure's name, or a prefix ending in ":" (one line per matching figure)
    label: str


def svg_chart(points: list[Point], series: list[Series], title: str, unit: str, now: float,
              span: float, width: int = 560, height: int = 130) -> Markup:
    """A line chart of `series` over the last `span` seconds."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        for one in series:
            for key, value in point.figures.items():
                if key == one.key or (one.key.endswith(":") and key.startswith(one.key)):
                    label = key[len(one.key):] if one.key.endswith(":") else one.label
                    lines.setdefault(label, []).append((point.at, value))
    top = max((v for line in lines.values() for _, v in line), default=0.0)
    top = _nice(top)
    left, bottom, plot_w, plot_h = 44, height - 18, width - 54, height - 34
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<text x="{left}" y="11" fill="#bbb" font-size="11">{escape(title)}</text>',
             f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" '
             'stroke="#555"/>',
             f'<text x="{left - 4}" y="{bottom - plot_h + 4}" fill="#999" font-size="10" '
             f'text-anchor="end">{_number(top)}</text>',
             f'<text x="{left - 4}" y="{bottom}" fill="#999" font-size="10" '
             'text-anchor="end">0</text>',
             f'<text x="{left}" y="{height - 4}" fill="#999" font-size="10">'
             f'-{_span(span)}</text>',
             f'<text x="{left + plot_w}" y="{height - 4}" fill="#999" font-size="10" '
             f'text-anchor="end">now ({escape(unit)})</text>']
    for index, (label, values) in enumerate(sorted(lines.items())):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(
            f"{left + plot_w * (1 - (now - at) / span):.1f},"
            f"{bottom - plot_h * (value / top if top else 0):.1f}"
            for at, value in values if now - at <= span)
        if coords:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                         f'points="{coords}"/>')
        parts.append(f'<text x="{left + 8 + 110 * index}" y="24" fill="{colour}" '
                     f'font-size="10">{escape(label)}</text>')
    if not lines:
        parts.append(f'<text x="{left + 8}" y="{bottom - plot_h / 2}" fill="#777" '
                     'font-size="11">no figures yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice(value: float) -> float:
    """A round upper bound for the axis: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= value)


def _number(value: float) -> str:
    return f"{value:g}" if value >= 1 else f"{value:.2g}"


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"
