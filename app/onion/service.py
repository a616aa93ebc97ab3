"""Publish the site as a Tor v3 onion service: launch our own tor or attach to one, keep the
address stable across restarts, watch tor and bring it back (or exit clearly) if it dies.

Two ways to publish, by mode:
- launch (our own tor): a HiddenServiceDir inside tor's data folder, set with SETCONF, because
  only such a service can tell us each connection's rendezvous circuit
  (HiddenServiceExportCircuitID haproxy; ADD_ONION does not take it). It points at the
  circuit listener (app/web/server.py), and it gets proof-of-work, stream limits per circuit
  and, if asked, the intro-point DoS defense. Our tor dies with us, so nothing stays
  published; the copy of the key in tor's folder is removed on stop (and at the next start).
- attach (someone else's tor, often another user that cannot read our folder): ADD_ONION
  without Detach, which lives as long as our control connection, with proof-of-work where
  that tor takes it. No circuit ids: budgets per circuit do not apply (start-up says so).
The stable address comes from our own key file either way.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import stem
import stem.connection
import stem.response
from stem.control import Controller, EventType

from app.config import Config, TorConfig
from app.onion.keys import (
    TOR_SECRET_HEADER,
    KeyFileError,
    OnionKey,
    authorized_clients,
    new_key,
    read_key,
    write_key,
    write_private,
)
from app.onion.tor_metrics import onion_figures
from app.runtime import processes
from app.runtime.ports import free_loopback_port

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Install it: `sudo apt-get install tor` (Debian/Ubuntu), `sudo dnf install tor` (Fedora), "
    "`brew install tor` (macOS); or set tor.command to the full path of the tor program. "
    "To attach to a tor that runs elsewhere instead, set tor.mode = \"attach\"."
)
HEALTHY_RESET_SECONDS = 600.0


class TorError(Exception):
    """Tor could not be used; the message says what happened and what to do."""


@dataclass(frozen=True)
class OnionPaths:
    """Where the onion service keeps its files, all under the state folder by default."""

    key_file: Path
    address_file: Path
    clients_dir: Path
    tor_dir: Path

    @classmethod
    def from_config(cls, config: Config) -> OnionPaths:
        onion_dir = config.state_dir / "onion"
        key_file = config.resolve(config.tor.key_file) if config.tor.key_file else (
            onion_dir / "private_key")
        return cls(key_file=key_file, address_file=onion_dir / "hostname",
                   clients_dir=onion_dir / "authorized_clients", tor_dir=config.state_dir / "tor")


def listen_host(config: Config) -> str:
    """In onion mode the web server is reachable through tor only, unless clearnet is asked for."""
    if config.tor.enabled and not config.tor.clearnet:
        return "127.0.0.1"
    return config.server.host


def load_or_create_key(paths: OnionPaths) -> OnionKey:
    """The persisted key; the first run makes one (0600) so every later run has the same address."""
    key = read_key(paths.key_file)
    if key is None:
        key = new_key()
        write_key(paths.key_file, key)
        log.info("made a new onion key in %s (back it up: it is the address)", paths.key_file)
    return key


# --- getting a controller -----------------------------------------------------------------------

class LaunchedTor:
    """A tor process we started; it exits with us (TAKEOWNERSHIP and __OwningControllerProcess)."""

    def __init__(self, tor: TorConfig, data_dir: Path):
        self.tor = tor
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.metrics_port = free_loopback_port() if tor.metrics else 0

    @property
    def port_file(self) -> Path:
        return self.data_dir / "control-port"

    def start(self) -> Controller:
        command = shutil.which(self.tor.command)
        if command is None:
            raise TorError(f"tor is not installed (no '{self.tor.command}' on PATH). "
                           + INSTALL_HINT)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # tor refuses a DataDirectory others can read
        self.port_file.unlink(missing_ok=True)
        torrc = self.data_dir / "torrc"
        torrc.write_text(self._torrc())
        defaults = self.data_dir / "torrc-defaults"
        defaults.write_text("")  # keep the system's defaults (User, SocksPort...) out
        try:
            with open(self.data_dir / "output.log", "wb") as output:
                self.process = subprocess.Popen(
                    [command, "-f", str(torrc), "--defaults-torrc", str(defaults)],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us; we stop tor in order
                    preexec_fn=processes.dies_with_us(signal.SIGTERM),
                )
        except OSError as exc:
            raise TorError(f"cannot run {command}: {exc.strerror}. " + INSTALL_HINT) from None
        log.info("tor started (pid %d), data in %s", self.process.pid, self.data_dir)
        port = self._wait_for_control_port()
        controller = _connect(lambda: Controller.from_port("127.0.0.1", port),
                              f"the tor we launched (127.0.0.1:{port})")
        _authenticate(controller, None, "the tor we launched")
        controller.msg("TAKEOWNERSHIP")
        return controller

    def _torrc(self) -> str:
        options = {
            "DataDirectory": str(self.data_dir),
            "ControlPort": "auto",
            "ControlPortWriteToFile": str(self.port_file),
            "CookieAuthentication": "1",
            "SocksPort": "0",
            "Log": f"notice file {self.data_dir / 'notice.log'}",
            "__OwningControllerProcess": str(os.getpid()),
        }
        if self.metrics_port:  # the onion service's own figures, for this machine only
            options["MetricsPort"] = f"127.0.0.1:{self.metrics_port}"
            options["MetricsPortPolicy"] = "accept 127.0.0.1"
        options.update({key: str(value) for key, value in self.tor.torrc.items()})
        return "".join(f"{key} {_torrc_value(value)}\n" for key, value in options.items())

    def _wait_for_control_port(self) -> int:
        deadline = time.monotonic() + self.tor.launch_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise TorError(f"tor exited at start (code {code}): {self.last_words()}")
            try:
                text = self.port_file.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text.startswith("PORT=") and text.rsplit(":", 1)[-1].isdigit():
                return int(text.rsplit(":", 1)[-1])
            time.sleep(0.05)
        self.stop()
        raise TorError(f"tor did not open its control port within {self.tor.launch_timeout:g} s "
                       f"(tor.launch_timeout): {self.last_words()}")

    def last_words(self) -> str:
        """The end of tor's own output: the reason it gave for failing, if any."""
        lines = []
        for name in ("output.log", "notice.log"):
            try:
                lines += (self.data_dir / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
        wanted = [line for line in lines if "[err]" in line or "[warn]" in line] or lines
        return " | ".join(wanted[-3:]) or "no output"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        processes.stop(self.process, 5)
        log.info("tor (pid %d) stopped", self.process.pid)


def attach(tor: TorConfig, config: Config) -> Controller:
    """Connect to a running tor's control socket or port and authenticate."""
    if tor.control_socket:
        path = config.resolve(tor.control_socket)
        where = f"tor's control socket {path}"
        controller = _connect(lambda: Controller.from_socket_file(str(path)), where)
    else:
        where = f"tor's control port {tor.control_host}:{tor.control_port}"
        controller = _connect(
            lambda: Controller.from_port(tor.control_host, tor.control_port), where)
    _authenticate(controller, tor.password or None, where)
    return controller


def _connect(open_controller: Callable[[], Controller], where: str) -> Controller:
    try:
        return open_controller()
    except stem.SocketError as exc:
        raise TorError(
            f"cannot connect to {where}: {exc}. Is tor running with a ControlPort (or "
            "ControlSocket) there? Set tor.control_port / tor.control_socket to match torrc, "
            "or use tor.mode = \"launch\" to let livestream start its own tor."
        ) from None


def _authenticate(controller: Controller, password: str | None, where: str) -> None:
    try:
        controller.authenticate(password=password)
    except stem.connection.MissingPassword:
        controller.close()
        raise TorError(f"authentication with {where} failed: tor wants a control password. "
                       "Set tor.password (or env LIVESTREAM_TOR_PASSWORD).") from None
    except (stem.connection.IncorrectPassword, stem.connection.PasswordAuthRejected):
        controller.close()
        raise TorError(f"authentication with {where} failed: wrong control password. "
                       "tor.password (or LIVESTREAM_TOR_PASSWORD) must be the password whose "
                       "hash is HashedControlPassword in torrc.") from None
    except stem.connection.UnreadableCookieFile as exc:
        controller.close()
        raise TorError(
            f"authentication with {where} failed: cannot read tor's cookie file "
            f"{exc.cookie_path}. On Debian add this user to the debian-tor group "
            "(sudo adduser $USER debian-tor, then log in again), or use a control password."
        ) from None
    except stem.connection.AuthenticationFailure as exc:
        controller.close()
        raise TorError(f"authentication with {where} failed: {exc}. Check CookieAuthentication "
                       "or HashedControlPassword in torrc and tor.password.") from None


def _torrc_value(value: str) -> str:
    if any(char in value for char in ' "\\#\t'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


# --- the onion service --------------------------------------------------------------------------

class OnionService:
    """One onion service in front of 127.0.0.1:target_port, with its tor and a watchdog."""

    def __init__(self, config: Config, target_port: int, circuit_port: int | None = None):
        """target_port: the plain listener (attach mode); circuit_port: the listener that
        reads tor's PROXY lines (launch mode), when there is one."""
        self.config = config
        self.circuit_port = circuit_port
        self.defenses: list[str] = []  # what tor defends the service with, for start-up
        self.tor = config.tor
        self.paths = OnionPaths.from_config(config)
        self.target_port = target_port
        self.address: str | None = None
        self.failed: str | None = None
        self._key: OnionKey | None = None
        self._clients: dict[str, str] = {}
        self._launched: LaunchedTor | None = None
        self._controller: Controller | None = None
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # the watchdog's restart and stop() never interleave
        self._watcher: threading.Thread | None = None
        # what tor tells us on the way to a reachable address (app/onion/reachability.py)
        self.published = threading.Event()  # our descriptor reached an HSDir
        self.bootstrap: dict[str, str] = {}  # tor's last BOOTSTRAP status: PROGRESS, SUMMARY...
        # stem logs every control command; keep that for --log-level debug only
        logging.getLogger("stem").setLevel(
            logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)

    def start(self) -> str:
        """Bring tor and the service up; return the .onion address."""
        if self.tor.ephemeral:
            self._key = new_key()  # throwaway: never written, but kept across tor restarts
        else:
            try:
                self._key = load_or_create_key(self.paths)
            except KeyFileError as exc:
                raise TorError(str(exc)) from None
        try:
            self._clients = authorized_clients(self.paths.clients_dir)
        except KeyFileError as exc:
            raise TorError(str(exc)) from None
        if self.tor.client_auth and not self._clients:
            raise TorError("tor.client_auth is on but no viewer is authorized yet: add one with "
                           "`livestream onion add-client NAME`.")
        self._bring_up()
        self.paths.address_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.paths.address_file.write_text(self.address + "\n")
        return self.address

    def _bring_up(self) -> None:
        if self.tor.mode == "launch":
            self._launched = LaunchedTor(self.tor, self.paths.tor_dir)
            try:
                self._controller = self._launched.start()
            except BaseException:
                self._launched.stop()
                raise
        else:
            self._controller = attach(self.tor, self.config)
        try:
            if self.uses_circuits:
                self._set_service_dir()
            else:
                self._add_service()
            self._follow_service()
        except BaseException:
            self._close()
            raise

    @property
    def uses_circuits(self) -> bool:
        return self.circuit_port is not None

    @property
    def service_dir(self) -> Path:
        return self.paths.tor_dir / "service"

    def _set_service_dir(self) -> None:
        """Our key in tor's own format in a folder of ours, and the service set on it next to
        any other service that tor has. An attached tor that cannot use it (another user
        that cannot read our folder, say) gets the ephemeral service instead."""
        folder = self.service_dir
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "authorized_clients").mkdir(parents=True, mode=0o700)
        os.chmod(folder, 0o700)
        write_private(folder / "hs_ed25519_secret_key", TOR_SECRET_HEADER + self._key.secret)
        if self.tor.client_auth:
            for name, public in self._clients.items():
                write_private(folder / "authorized_clients" / f"{name}.auth",
                              f"descriptor:x25519:{public}\n")
        options = {"HiddenServicePort": [(self.tor.virtual_port, "127.0.0.1",
                                          self.circuit_port)],
                   "HiddenServiceExportCircuitID": "haproxy",
                   "HiddenServiceMaxStreams": str(self.tor.max_streams),
                   "HiddenServiceMaxStreamsCloseCircuit": "1"}
        if self.tor.intro_dos_defense:
            options["HiddenServiceEnableIntroDoSDefense"] = "1"
        pow_options = {"HiddenServicePoWDefensesEnabled": "1",
                       "HiddenServicePoWQueueRate": str(self.tor.pow_queue_rate),
                       "HiddenServicePoWQueueBurst": str(self.tor.pow_queue_burst)}
        with_pow = self.tor.pow and (self.tor.mode == "attach" or tor_has_pow(self.tor.command))
        try:
            try:
                self._publish_dir(folder, {**options, **pow_options} if with_pow else options)
            except stem.InvalidArguments:
                if not with_pow:
                    raise
                with_pow = False  # an attached tor without the pow module
                self._publish_dir(folder, options)
        except (stem.InvalidArguments, stem.InvalidRequest, stem.OperationFailed) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if self.tor.mode == "launch":
                raise TorError(f"tor refused the onion service's options: {exc}") from None
            log.warning("the attached tor refused a service folder of ours (%s; it must run "
                        "as this user to read it): publishing without circuit ids", exc)
            self.circuit_port = None
            self._add_service()
            return
        except stem.ControllerError as exc:
            raise TorError(f"lost tor while creating the onion service: {exc}") from None
        if self.tor.pow and not with_pow:
            log.warning("this tor has no proof-of-work module (tor --list-modules shows "
                        "`pow: yes` from tor 0.4.8): the onion service runs without it")
        self.defenses = [f"at most {self.tor.max_streams} streams per circuit"]
        if with_pow:
            self.defenses.append(f"proof-of-work (queue {self.tor.pow_queue_rate}/s)")
        if self.tor.intro_dos_defense:
            self.defenses.append("intro-point DoS defense")
        try:
            address = (folder / "hostname").read_text("ascii").strip()
        except OSError as exc:
            raise TorError(f"tor did not write the onion service's hostname: {exc}") from None
        if address != self._key.address:
            raise TorError(f"tor published {address}, but the key says {self._key.address}")
        self.address = address

    def _publish_dir(self, folder: Path, options: dict) -> None:
        conf = self._controller.get_hidden_service_conf()
        conf[str(folder)] = options
        self._controller.set_hidden_service_conf(conf)

    def _withdraw_dir(self, controller: Controller) -> None:
        """Take our service out of an attached tor's configuration (its others stay)."""
        try:
            conf = controller.get_hidden_service_conf()
            if conf.pop(str(self.service_dir), None) is not None:
                controller.set_hidden_service_conf(conf)
                log.info("onion service %s removed", self.address)
        except stem.ControllerError as exc:
            log.warning("could not remove the onion service: %s", exc)

    def _add_service(self) -> None:
        expected = self._key.address
        request = f"ADD_ONION ED25519-V3:{self._key.blob}"
        if self.tor.client_auth:
            request += " Flags=V3Auth"
        if self.tor.pow:
            request += (f" PoWDefensesEnabled=1 PoWQueueRate={self.tor.pow_queue_rate}"
                        f" PoWQueueBurst={self.tor.pow_queue_burst}")
        request += f" MaxStreams={self.tor.max_streams}"
        request += f" Port={self.tor.virtual_port},127.0.0.1:{self.target_port}"
        if self.tor.client_auth:
            request += "".join(f" ClientAuthV3={key}" for key in self._clients.values())
        try:
            try:
                response = self._controller.msg(request)
                stem.response.convert("ADD_ONION", response)
            except stem.ProtocolError as exc:
                if "PoW" not in request or "unrecognized" not in str(exc).lower():
                    raise
                log.warning("the attached tor takes no proof-of-work options (tor 0.4.9.2 or "
                            "newer does): the onion service runs without it")
                request = request.replace(
                    f" PoWDefensesEnabled=1 PoWQueueRate={self.tor.pow_queue_rate}"
                    f" PoWQueueBurst={self.tor.pow_queue_burst}", "")
                response = self._controller.msg(request)
                stem.response.convert("ADD_ONION", response)
            else:
                if self.tor.pow:
                    self.defenses.append(f"proof-of-work (queue {self.tor.pow_queue_rate}/s)")
        except stem.ProtocolError as exc:
            reason = str(exc).rsplit(": ", 1)[-1]
            if "collision" in reason.lower():
                raise TorError(f"tor already serves {expected}: another livestream is running "
                               "with the same key. Stop it first.") from None
            if "decode" in reason.lower():
                raise TorError(f"{self.paths.key_file}: tor rejected the onion key as malformed "
                               f"({reason}). Restore it or remove it for a new address.") from None
            raise TorError(f"tor refused to create the onion service: {reason}") from None
        except stem.ControllerError as exc:
            raise TorError(f"lost tor while creating the onion service: {exc}") from None
        address = f"{response.service_id}.onion"
        if address != expected:
            raise TorError(f"tor published {address}, but the key says {expected}")
        self.address = address

    def _follow_service(self) -> None:
        address = self.address
        self._controller.add_event_listener(self._on_descriptor, EventType.HS_DESC)
        self._controller.add_event_listener(self._on_status, EventType.STATUS_CLIENT)
        try:  # where tor is now; the events tell what follows
            phase = self._controller.get_info("status/bootstrap-phase", "")
            self.bootstrap = _bootstrap_fields(phase)
        except stem.ControllerError:
            pass
        log.info("onion service %s -> 127.0.0.1:%d%s", address,
                 self.circuit_port if self.uses_circuits else self.target_port,
                 f" ({len(self._clients)} authorized clients)" if self.tor.client_auth else "")

    def _on_descriptor(self, event) -> None:
        ours = self.address and (event.address or "") in ("", "UNKNOWN", self.address[:-6])
        if str(event.action) == "UPLOADED" and ours:
            if not self.published.is_set():
                log.info("onion service descriptor published")
            self.published.set()

    def _on_status(self, event) -> None:
        if str(event.action) == "BOOTSTRAP":
            self.bootstrap = {key.upper(): str(value)
                              for key, value in (event.keyword_args or {}).items()}
            self.bootstrap["SEVERITY"] = str(event.runlevel)

    @property
    def metrics_port(self) -> int:
        """Where tor's MetricsPort is: the one we opened, or tor.metrics_port (attach)."""
        launched = self._launched
        return launched.metrics_port if launched is not None else self.tor.metrics_port

    def traffic(self) -> dict[str, float]:
        """Bytes tor read and wrote since it started, and what its MetricsPort says about
        our service: the cockpit's figures."""
        controller = self._controller
        if controller is None:
            return {}
        figures = onion_figures(self.metrics_port, self.address) if self.metrics_port else {}
        try:
            figures.update({
                "livestream_tor_read_bytes": float(controller.get_info("traffic/read")),
                "livestream_tor_written_bytes": float(controller.get_info("traffic/written"))})
        except (stem.ControllerError, ValueError):
            pass
        return figures

    def close_circuit(self, circuit: int) -> None:
        """Close one rendezvous circuit (a client that keeps going over its budgets)."""
        controller = self._controller
        if controller is None:
            return
        try:
            controller.msg(f"CLOSECIRCUIT {int(circuit)}")
        except stem.ControllerError as exc:
            log.debug("could not close a circuit: %s", exc)

    def network_disabled(self) -> bool:
        """DisableNetwork 1: tor will never connect (offline tests, or a torrc left so)."""
        try:
            return self._controller is not None and \
                self._controller.get_conf("DisableNetwork", "0") == "1"
        except stem.ControllerError:
            return False

    def stopping(self) -> bool:
        return self._stopping.is_set()

    def watch(self, on_fatal: Callable[[str], None]) -> threading.Thread:
        """Check tor every tor.check_interval s; restart it, or call on_fatal once and stop."""
        self._watcher = threading.Thread(target=self._watch, args=(on_fatal,),
                                         name="tor-watchdog", daemon=True)
        self._watcher.start()
        return self._watcher

    def problem(self) -> str | None:
        """Why tor is unusable now, or None while it is fine. Never blocks."""
        launched = self._launched
        if launched and launched.process and launched.process.poll() is not None:
            return (f"tor (pid {launched.process.pid}) exited with code "
                    f"{launched.process.returncode}: {launched.last_words()}")
        if self._controller is None or not self._controller.is_alive():
            return "lost the connection to tor's control port"
        return None

    def _watch(self, on_fatal: Callable[[str], None]) -> None:
        restarts, last_restart = 0, 0.0
        while not self._stopping.wait(self.tor.check_interval):
            problem = self.problem()
            if problem is None:
                continue
            log.error("%s", problem)
            if time.monotonic() - last_restart > HEALTHY_RESET_SECONDS:
                restarts = 0
            recovered = False
            while not recovered and restarts < self.tor.restart_attempts:
                if self._stopping.is_set():
                    return
                restarts += 1
                log.warning("restarting tor (attempt %d of %d)", restarts,
                            self.tor.restart_attempts)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._close()
                    try:
                        self._bring_up()
                        recovered = True
                    except TorError as exc:
                        log.error("tor restart failed: %s", exc)
                if not recovered:
                    self._stopping.wait(min(2.0 ** restarts, 15.0))
            if self._stopping.is_set():
                return
            if not recovered:
                self.failed = (f"tor is gone ({problem}) and {restarts} restart attempt(s) "
                               "failed; the onion service is down, so the server stops.")
                on_fatal(self.failed)
                return
            last_restart = time.monotonic()
            log.warning("tor is back; the onion service is at %s again", self.address)

    def stop(self) -> None:
        """Remove the service, stop the tor we launched, forget a throwaway address."""
        self._stopping.set()
        with self._lock:
            controller = self._controller
            alive = controller is not None and controller.is_alive() and self.address
            if self.uses_circuits:
                if alive and self.tor.mode == "attach":
                    self._withdraw_dir(controller)
                # a launched tor takes the service with it
            elif alive:
                try:
                    controller.remove_ephemeral_hidden_service(self.address[:-len(".onion")])
                    log.info("onion service %s removed", self.address)
                except stem.ControllerError as exc:
                    log.warning("could not remove the onion service: %s", exc)
            self._close()
        shutil.rmtree(self.service_dir, ignore_errors=True)  # the copy of the key
        if self.tor.ephemeral:
            self.paths.address_file.unlink(missing_ok=True)

    def _close(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.close()
        launched, self._launched = self._launched, None
        if launched is not None:
            launched.stop()


def tor_has_pow(command: str) -> bool:
    """Whether this tor was built with the proof-of-work module (`pow: yes`)."""
    try:
        listed = subprocess.run([shutil.which(command) or command, "--list-modules"],
                                check=False, capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "pow: yes" in listed


def _bootstrap_fields(phase: str) -> dict[str, str]:
    """'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"' -> its key=value fields."""
    import shlex

    try:
        words = shlex.split(phase)
    except ValueError:
        return {}
    fields = dict(word.split("=", 1) for word in words if "=" in word)
    if words:
        fields["SEVERITY"] = words[0]
    return fields


def stored_address(config: Config) -> str | None:
    """The persistent address, from the key file (no tor needed); None if there is no key yet."""
    if config.tor.ephemeral:
        return None
    try:
        key = read_key(OnionPaths.from_config(config).key_file)
    except KeyFileError as exc:
        raise TorError(str(exc)) from None
    return key.address if key else None
