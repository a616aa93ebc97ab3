"""A loopback port free right now, for listeners that cannot be told "any port" (tor's
MetricsPort, ssh's forwards)."""
from __future__ import annotations

import socket


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
