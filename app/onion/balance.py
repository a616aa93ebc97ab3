"""One onion address over several machines, with the Tor Project's Onionbalance.

The front: a key of its own (the address viewers use), an Onionbalance config naming the
backends' onion addresses, and `onionbalance` run against a tor control port; it fetches the
backends' descriptors and publishes one descriptor for the front address that lists their
introduction points together, so a dead backend's points fail and clients use the others.

The backends: Onionbalance v3 needs each backend to publish descriptors meant for the front
(`HiddenServiceOnionbalanceInstance 1` and an `ob_config` file naming the front address in the
backend's HiddenServiceDir). Tor applies that only to services configured with a
HiddenServiceDir, not to ephemeral ADD_ONION services (which `serve --onion` uses), so a
balanced backend is published here through the control port as a HiddenServiceDir service.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from stem.control import Controller
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3

from app.runtime import processes

log = logging.getLogger(__name__)

INSTALL_HINT = "Install it: `sudo apt-get install onionbalance` (or `pip install onionbalance`)."


class BalanceError(Exception):
    """The front or a backend could not be set up; says what to do."""


def front_key(path: Path) -> str:
    """The front's ed25519 key (PEM, as Onionbalance reads it), made once; its address."""
    path = Path(path)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise BalanceError(f"{path} is not an ed25519 key; move it away to make a new one")
    else:
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    return onion_name(HiddenServiceDescriptorV3.address_from_identity_key(public))


def onion_name(address: str) -> str:
    """'abc...xyz.onion' whatever form it came in (with http://, a slash, or no suffix)."""
    name = address.strip().lower().removeprefix("http://").rstrip("/")
    name = name.removesuffix(".onion")
    if len(name) != 56 or not name.isalnum():
        raise BalanceError(f"{address!r} is not a v3 onion address (56 letters and digits "
                           "before .onion)")
    return name + ".onion"


def write_front_config(folder: Path, backends: list[str]) -> tuple[Path, str]:
    """folder/config.yaml for onionbalance and folder/front_key; (config path, front address)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if len(backends) < 1:
        raise BalanceError("name at least one backend onion address (--backend, repeatable)")
    names = [onion_name(b) for b in backends]
    address = front_key(folder / "front_key")
    if address in names:
        raise BalanceError("a backend cannot have the front's own address")
    lines = ["# written by `livestream onion balance`; rewritten on each start",
             "services:", f"  - key: {folder / 'front_key'}", "    instances:"]
    lines += [f"      - address: {name}" for name in names]
    path = folder / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, address


def onionbalance_argv(config_path: Path, control_host: str, control_port: int,
                      testnet: bool = False, command: str = "onionbalance") -> list[str]:
    """How Onionbalance is started against a tor control port (cookie or no auth)."""
    found = shutil.which(command)
    if found is None:
        raise BalanceError(f"onionbalance is not installed. {INSTALL_HINT}")
    argv = [found, "--hs-version", "v3", "-i", control_host, "-p", str(control_port),
            "-c", str(config_path), "-v", "info"]
    return argv + (["--is-testnet"] if testnet else [])


def run_front(config_path: Path, control_host: str, control_port: int, testnet: bool = False,
              log_file: Path | None = None) -> subprocess.Popen:
    """Start onionbalance; its own log goes to `log_file` (or ours)."""
    argv = onionbalance_argv(config_path, control_host, control_port, testnet)
    out = open(log_file, "ab") if log_file else None  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                start_new_session=True,
                                preexec_fn=processes.dies_with_us(signal.SIGTERM))
    finally:
        if out:
            out.close()


# ---------------------------------------------------------------- backends

def publish_backend(controller: Controller, hs_dir: Path, target_port: int, front: str,
                    virtual_port: int = 80, timeout: float = 30.0,
                    export_circuits: bool = False) -> str:
    """Add a HiddenServiceDir onion service for this server to the attached tor, marked as an
    Onionbalance instance of `front`; return its own (backend) address.

    Existing onion services of that tor are kept: tor's whole HiddenService configuration is
    read, ours is added (or replaced) and written back. `export_circuits`: target_port is the
    server's circuit listener, which reads tor's PROXY line naming each circuit.
    """
    hs_dir = Path(hs_dir).resolve()
    hs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(hs_dir, 0o700)  # tor refuses a group- or world-readable service folder
    (hs_dir / "ob_config").write_text(f"MasterOnionAddress {onion_name(front)}\n")
    conf = controller.get_hidden_service_conf()
    conf[str(hs_dir)] = {"HiddenServicePort": [(virtual_port, "127.0.0.1", target_port)],
                         "HiddenServiceVersion": "3",
                         "HiddenServiceOnionbalanceInstance": "1"}
    if export_circuits:
        conf[str(hs_dir)]["HiddenServiceExportCircuitID"] = "haproxy"
    controller.set_hidden_service_conf(conf)
    hostname = hs_dir / "hostname"
    deadline = time.monotonic() + timeout
    while not hostname.exists():
        if time.monotonic() > deadline:
            raise BalanceError(f"tor made no {hostname} within {timeout:.0f} s; see tor's log")
        time.sleep(0.1)
    return hostname.read_text().strip()


def withdraw_backend(controller: Controller, hs_dir: Path) -> None:
    """Remove our service from the attached tor again (its keys stay in hs_dir)."""
    conf = controller.get_hidden_service_conf()
    if conf.pop(str(Path(hs_dir).resolve()), None) is not None:
        controller.set_hidden_service_conf(conf)


# ---------------------------------------------------------------- `livestream onion ...`

def run_front_command(config, backends: list[str], testnet: bool = False) -> int:
    """`livestream onion balance --backend ADDR ...`: write the front's config and run
    onionbalance against the tor of [tor] control_host/control_port until Ctrl-C."""
    import sys

    folder = config.state_dir / "onion" / "balance"
    if not backends:  # step one: the address the backends must name
        try:
            address = front_key(folder / "front_key")
        except (BalanceError, OSError, ValueError) as exc:
            print(f"livestream: {exc}", file=sys.stderr)
            return 1
        print(f"front address: {address}\nOn each backend run: livestream onion backend "
              f"--front {address}\nthen here: livestream onion balance --backend ADDRESS "
              "--backend ADDRESS ...")
        return 0
    try:
        config_path, address = write_front_config(folder, backends)
        process = run_front(config_path, config.tor.control_host, config.tor.control_port,
                            testnet)
    except (BalanceError, OSError, ValueError) as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    print(f"front address: http://{address}/\n"
          f"On each backend run: livestream onion backend --front {address}", flush=True)
    if until_stopped(process):
        return process.returncode  # onionbalance ended by itself: its log says why
    processes.stop(process, 10)  # it can sit in a control-port call: killed after 10 s
    return 130


def until_stopped(process: subprocess.Popen | None = None) -> bool:
    """Wait for Ctrl-C or SIGTERM (systemd, kill), or for `process` to end by itself (True)."""
    import gevent

    from app.runtime.signals import stop_event

    stopping = stop_event()
    if process is not None:
        gevent.spawn(process.wait).link(lambda _: stopping.set())
    stopping.wait()
    return process is not None and process.poll() is not None


def run_backend_command(config, front: str) -> int:
    """`livestream onion backend --front ADDR`: publish this machine's server as an
    Onionbalance instance of the front in the attached tor, until Ctrl-C."""
    import sys

    from app.onion.service import TorError, attach

    hs_dir = config.state_dir / "onion" / "backend"
    try:
        controller = attach(config.tor, config)
    except TorError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    try:
        circuits = config.tor.circuit_port
        address = publish_backend(controller, hs_dir, circuits or config.server.port, front,
                                  config.tor.virtual_port, export_circuits=bool(circuits))
        if not circuits:
            print("note: set [tor] circuit_port (the same in `serve`'s config, then restart "
                  "it) so this backend's viewers have per-circuit budgets", file=sys.stderr,
                  flush=True)
        print(f"backend address: {address} (give it to `livestream onion balance "
              f"--backend`); serving port {circuits or config.server.port} for {onion_name(front)}",
              flush=True)
        until_stopped()
        return 130
    except (BalanceError, OSError) as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            withdraw_backend(controller, hs_dir)
        finally:
            controller.close()
