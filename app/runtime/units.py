"""systemd units for livestream: one hardened service description shared by a home server
(`livestream service install`) and the rented droplet (app/cloud/user_data.py).

The sandbox: a dedicated unprivileged user (or the user's own manager with --user), no new
privileges, the whole file system read-only but for the state and stream folders, private
/tmp and devices, no access to home folders (read-only when the checkout lives in one), only
the address families a web server and tor's control port need, no capabilities except
binding a port below 1024 when asked, a umask that keeps every new file private, and a memory
limit. `systemd-analyze security` scores the result (docs/reliability.md has the figure).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# A 512 MB droplet ran serve, the ingest (transcoding), tor and 50 viewers at a 217 MiB peak
# (bench/droplet_memory.py, docs/benchmarks.md): twice that leaves room for a burst of
# viewers and still stops a leak before it takes the machine.
MEMORY_MAX = "448M"

HARDENING = [
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    "ProtectSystem=strict",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged",
    # a call outside the filter fails (EPERM) instead of killing the server outright
    "SystemCallErrorNumber=EPERM",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "UMask=0077",
    f"MemoryMax={MEMORY_MAX}",
]


@dataclass(frozen=True)
class Unit:
    description: str
    exec_start: str
    working_directory: str
    writable: list[str] = field(default_factory=list)
    user: str | None = "livestream"  # None: a --user unit, run by the user's own manager
    environment_file: str | None = None
    low_port: bool = False
    home_read_only: bool = False  # the checkout lives under /home or /root
    wanted_by: str = "multi-user.target"


def render(unit: Unit) -> str:
    lines = ["[Unit]", f"Description={unit.description}",
             "After=network-online.target", "Wants=network-online.target", "",
             "[Service]"]
    if unit.user:
        lines.append(f"User={unit.user}")
    if unit.environment_file:
        lines.append(f"EnvironmentFile={unit.environment_file}")
    lines += [f"WorkingDirectory={unit.working_directory}", f"ExecStart={unit.exec_start}",
              "Restart=on-failure", "RestartSec=2", *HARDENING,
              f"ProtectHome={'read-only' if unit.home_read_only else 'yes'}"]
    if unit.writable:
        lines.append("ReadWritePaths=" + " ".join(unit.writable))
    if unit.low_port:
        lines += ["AmbientCapabilities=CAP_NET_BIND_SERVICE",
                  "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"]
    elif unit.user:
        lines.append("CapabilityBoundingSet=")
    lines += ["", "[Install]", f"WantedBy={unit.wanted_by}"]
    return "\n".join(lines) + "\n"
