"""What tor's MetricsPort says about our onion service, for the cockpit and /metrics.

Tor counts what the server cannot see: introductions it received and refused, rendezvous
circuits, the proof-of-work effort it asks of clients and its queue. The MetricsPort
(Prometheus text on loopback) is read when the cockpit or a scrape asks, parsed with
`prometheus_client`'s parser, and only the onion-service families are kept, summed over
their labels for our address (another service of an attached tor is not ours to show).
"""
from __future__ import annotations

import logging

import requests
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

TIMEOUT = 1.0
MAX_BYTES = 1024 * 1024
PREFIX = "tor_hs_"  # tor's onion-service families
SHOWN_AS = "livestream_tor_hs_"  # how they appear in our /metrics


def onion_figures(port: int, address: str | None) -> dict[str, float]:
    """`livestream_tor_hs_*` figures from tor's MetricsPort on 127.0.0.1:`port`; {} when it
    does not answer (never raises: the cockpit goes on without them)."""
    try:
        with requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT,
                          stream=True) as response:
            text = response.raw.read(MAX_BYTES, decode_content=True).decode("utf-8", "replace")
    except (requests.RequestException, OSError) as exc:
        log.debug("tor's MetricsPort did not answer: %s", exc)
        return {}
    ours = (address or "").removesuffix(".onion")
    figures: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.type not in ("counter", "gauge"):
                continue  # histograms' buckets do not add up across labels
            for sample in family.samples:
                if not sample.name.startswith(PREFIX):
                    continue
                onion = sample.labels.get("onion")
                if onion is not None and ours and onion != ours:
                    continue
                name = SHOWN_AS + sample.name[len(PREFIX):]
                figures[name] = figures.get(name, 0.0) + float(sample.value)
    except ValueError as exc:
        log.debug("tor's MetricsPort sent what is not Prometheus text: %s", exc)
        return {}
    return figures
