"""Telling the streamer the truth about the onion address: "reachable" only once tor has
published the service's descriptor (tor's own HS_DESC UPLOADED event), tor's bootstrap
progress until then, and, past a time limit, why not (tor's bootstrap warning and what to do
about it: the clock, the network, bridges), so nobody hands out a dead address."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Watched(Protocol):
    """What an OnionService exposes for this (app/onion/service.py)."""

    address: str | None
    bootstrap: dict[str, str]

    def network_disabled(self) -> bool: ...


def advice(bootstrap: dict[str, str], network_disabled: bool) -> str:
    """Why tor has not published the address, in plain words, with what to do."""
    if network_disabled:
        return ("tor's network is switched off (DisableNetwork 1 in [tor] torrc): remove it "
                "so tor can connect")
    warning = bootstrap.get("WARNING", "")
    reason = bootstrap.get("REASON", "").lower()
    progress = bootstrap.get("PROGRESS", "0")
    said = f" (tor says: {warning}, {reason})" if warning else ""
    if "clock" in (warning + reason).lower():
        return ("this machine's clock looks wrong" + said + ": tor refuses to work with a "
                "clock hours off. Check `date -u` and set the time (e.g. systemd-timesyncd)")
    if progress == "100":
        return ("tor is connected but the address is not published yet" + said + "; it "
                "usually takes under a minute, keep waiting")
    return (f"tor is stuck at {progress}% connecting to the Tor network{said}. Is this "
            "machine online, without a firewall blocking tor? On a censored network, use "
            "bridges: add UseBridges 1 and Bridge lines to [tor] torrc")


def follow(onion: Watched, published_wait: Callable[[float], bool], limit: float,
           say: Callable[[str], None], stopped: Callable[[], bool],
           clock: Callable[[], float] = time.monotonic) -> bool:
    """Report until the address is published (True) or we stop (False): bootstrap progress
    as it changes, once past `limit` seconds what is wrong, and "reachable" when it is."""
    started, shown, late = clock(), None, False
    while not stopped():
        if published_wait(1.0):
            waited = clock() - started
            say(f"onion address reachable: http://{onion.address}/ (published after "
                f"{waited:.0f} s)" + (" - it is up after all" if late else ""))
            return True
        phase = (onion.bootstrap.get("PROGRESS"), onion.bootstrap.get("SUMMARY"))
        if phase != shown and phase[0] is not None:
            shown = phase
            say(f"tor: {phase[0]}% {phase[1] or ''}".rstrip())
        if not late and clock() - started >= limit:
            late = True
            say(f"onion address NOT reachable after {limit:.0f} s: "
                + advice(onion.bootstrap, onion.network_disabled())
                + ". Do not hand the address out yet; this says so when it is up.")
    return False
