"""Which client a request came from, for the per-client budgets (app/web/budgets.py).

Over Tor every connection comes from tor's own 127.0.0.1, so the address says nothing. Tor
can say which rendezvous circuit a connection came through (`HiddenServiceExportCircuitID
haproxy`): a PROXY protocol line before the request, read only on the listener that only our
tor connects to (app/web/server.py: CircuitHandler), never on the public one. That circuit is
the client: a script inventing viewers pays a new circuit for each batch. On the clear web the
client is the address, an IPv6 /64 as one (what one subscriber usually gets). Loopback without
a circuit is this machine, or a reverse proxy in front of us: no budget, since its address
would lump every viewer together.
"""
from __future__ import annotations

import ipaddress

CIRCUIT_KEY = "livestream.circuit"  # WSGI environ: tor's global circuit id, an int
CIRCUIT_PREFIX = ipaddress.ip_network("fc00:dead:beef:4dad::/64")  # tor's fixed source prefix


class BadProxyLine(ValueError):
    """Not the PROXY line tor sends: the connection is dropped."""


def circuit_from_proxy_line(line: bytes) -> int:
    """Tor's line is `PROXY TCP6 fc00:dead:beef:4dad::HHHH:LLLL ::1 SRCPORT VIRTPORT`, the
    circuit's global id in the source address's last 32 bits."""
    words = line.rstrip(b"\r\n").split(b" ")
    if len(words) != 6 or words[0] != b"PROXY" or words[1] != b"TCP6" \
            or not line.endswith(b"\r\n"):
        raise BadProxyLine("not a PROXY TCP6 line")
    try:
        source = ipaddress.IPv6Address(words[2].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadProxyLine("bad source address") from None
    if source not in CIRCUIT_PREFIX:
        raise BadProxyLine("source is not a tor circuit address")
    return int(source) & 0xFFFFFFFF


def client_of(environ: dict) -> str | None:
    """The budget key of a request: 'circuit N', an IPv4 address or an IPv6 /64; None for
    loopback (unbudgeted)."""
    circuit = environ.get(CIRCUIT_KEY)
    if circuit is not None:
        return f"circuit {circuit}"
    try:
        address = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None
    if address.version == 6:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def circuit_id(client: str | None) -> int | None:
    """The tor circuit behind a budget key, if it is one (for CLOSECIRCUIT)."""
    if client and client.startswith("circuit "):
        return int(client.split(" ", 1)[1])
    return None
