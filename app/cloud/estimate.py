"""What a stream costs: transfer, how many viewers an uplink carries, droplet money.

Kept apart from the cloud code so the arithmetic can be checked by hand: every figure comes
from the command-line numbers and the one price table in config ([cloud.prices]).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from app.config import ConfigError, PriceTable, SizePrice

GIB = 2**30
GB = 10**9


@dataclass(frozen=True)
class Estimate:
    viewers: int
    hours: float
    bitrate_kbps: float
    size: str
    sessions_per_month: int
    bytes_per_viewer: float
    total_bytes: float  # (viewers + 1) x one copy: what crosses the network per session
    outbound_bytes: float  # viewers x one copy: what DigitalOcean counts (inbound is free)
    max_viewers_on_uplink: int | None
    billed_seconds: int  # per session: per second, at least MIN_BILLED_SECONDS
    session_usd: float
    month_hours: float
    month_usd: float
    month_outbound_gib: float
    allowance_gib: float
    overage_gib: float
    overage_usd: float

    @property
    def allowance_exceeded(self) -> bool:
        return self.overage_gib > 0


# DigitalOcean bills droplets per second since 1 January 2026, with a minimum charge of
# 60 seconds or $0.01, whichever is more (rule checked: see [cloud.prices] billing_checked).
MIN_BILLED_SECONDS = 60
MIN_CHARGE_USD = 0.01


def droplet_cost(seconds: float, usd_per_hour: float) -> float:
    """What a droplet that existed `seconds` costs: per second, at least 60 s or $0.01."""
    billed = max(MIN_BILLED_SECONDS, math.ceil(seconds - 1e-9))
    return max(MIN_CHARGE_USD, billed * usd_per_hour / 3600)


def price_of(prices: PriceTable, size: str) -> SizePrice:
    """The table row for a size, or an error that lists the sizes the table knows."""
    try:
        return prices.sizes[size]
    except KeyError:
        raise ConfigError(
            f"no price for droplet size '{size}' in [cloud.prices.sizes]; known sizes: "
            f"{', '.join(sorted(prices.sizes))}. Add it to config.toml."
        ) from None


def cheapest_size(prices: PriceTable) -> str:
    """The slug `--size cheapest` stands for: the lowest hourly price in the table."""
    return min(prices.sizes, key=lambda slug: prices.sizes[slug].usd_per_hour)


def estimate(viewers: int, hours: float, bitrate_kbps: float, prices: PriceTable,
             size: str = "cheapest", uplink_mbps: float | None = None,
             sessions_per_month: int = 4) -> Estimate:
    """Figures for `sessions_per_month` sessions of `hours` each, one fresh droplet per session."""
    if viewers < 0 or hours <= 0 or bitrate_kbps <= 0 or sessions_per_month < 1:
        raise ValueError("viewers must be >= 0, hours and bitrate > 0, sessions >= 1")
    if uplink_mbps is not None and uplink_mbps <= 0:
        raise ValueError("uplink must be > 0 Mbit/s")
    slug = cheapest_size(prices) if size == "cheapest" else size
    price = price_of(prices, slug)

    bytes_per_viewer = bitrate_kbps * 1000 / 8 * hours * 3600
    billed_seconds = max(MIN_BILLED_SECONDS, math.ceil(hours * 3600 - 1e-6))
    session_usd = droplet_cost(billed_seconds, price.usd_per_hour)
    month_hours = billed_seconds / 3600 * sessions_per_month
    month_usd = min(session_usd * sessions_per_month, price.usd_per_month)
    month_outbound_gib = sessions_per_month * viewers * bytes_per_viewer / GIB
    accrued_hours = min(month_hours, prices.hours_per_month)
    allowance_gib = price.transfer_gib * accrued_hours / prices.hours_per_month
    overage_gib = max(0.0, month_outbound_gib - allowance_gib)
    return Estimate(
        viewers=viewers, hours=hours, bitrate_kbps=bitrate_kbps, size=slug,
        sessions_per_month=sessions_per_month,
        bytes_per_viewer=bytes_per_viewer,
        total_bytes=(viewers + 1) * bytes_per_viewer,
        outbound_bytes=viewers * bytes_per_viewer,
        max_viewers_on_uplink=(None if uplink_mbps is None
                               else math.floor(uplink_mbps * 1000 / bitrate_kbps + 1e-9)),
        billed_seconds=billed_seconds, session_usd=session_usd,
        month_hours=month_hours, month_usd=month_usd,
        month_outbound_gib=month_outbound_gib, allowance_gib=allowance_gib,
        overage_gib=overage_gib, overage_usd=overage_gib * prices.overage_usd_per_gib,
    )


def report(e: Estimate, prices: PriceTable, uplink_mbps: float | None = None) -> str:
    """The estimate as a few lines a person reads in a terminal."""
    price = price_of(prices, e.size)
    lines = [
        (f"{e.viewers} viewers, {e.hours:g} h at {e.bitrate_kbps:g} kbit/s on {e.size} "
        f"(prices checked {prices.checked}: {prices.source}; per-second billing checked "
        f"{prices.billing_checked})"),
        f"  one copy of the stream:  {_size(e.bytes_per_viewer)}",
        f"  total transfer:          {_size(e.total_bytes)} = ({e.viewers} + 1) x one copy",
        f"  droplet outbound:        {_size(e.outbound_bytes)} (inbound, your upload, is free)",
    ]
    if e.max_viewers_on_uplink is not None:
        lines.append(f"  uplink {uplink_mbps:g} Mbit/s carries at most "
                     f"{e.max_viewers_on_uplink} viewers when you serve from home")
    lines += [
        (f"  droplet this session:    ${e.session_usd:.4f} ({e.billed_seconds} s billed per "
        f"second at ${price.usd_per_hour:g}/h, at least 60 s or $0.01; it is destroyed "
        "afterwards)"),
        (f"  per month, {e.sessions_per_month} sessions:   ${e.month_usd:.2f} for "
        f"{e.month_hours:g} droplet-hours (kept on all month: ${price.usd_per_month:.2f})"),
        (f"  monthly transfer:        {e.month_outbound_gib:.2f} GiB outbound; allowance earned "
        f"in those hours {e.allowance_gib:.2f} GiB (more if other droplets share the account)"),
    ]
    if e.allowance_exceeded:
        lines.append(f"  allowance EXCEEDED by {e.overage_gib:.2f} GiB: about "
                     f"${e.overage_usd:.2f} extra at ${prices.overage_usd_per_gib:g}/GiB")
    else:
        lines.append("  allowance not exceeded")
    return "\n".join(lines)


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB ({n / GIB:.2f} GiB)"


def run(args: argparse.Namespace, prices: PriceTable) -> int:
    """`livestream estimate`: print the figures, or say which number is wrong."""
    try:
        figures = estimate(args.viewers, args.hours, args.bitrate, prices, size=args.size,
                           uplink_mbps=args.uplink, sessions_per_month=args.sessions)
    except (ValueError, ConfigError) as exc:
        print(f"livestream estimate: {exc}", file=sys.stderr)
        return 2
    print(report(figures, prices, args.uplink))
    return 0
