"""`livestream`: the front door. Every subcommand is a thin layer over a module."""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app import config as configuration
from app.config import PROJECT_DIR, Config, ConfigError
from app.runtime import processes, signals
from app.stream.lock import FolderBusy

if TYPE_CHECKING:
    import gevent.event

    from app.onion.service import OnionService

log = logging.getLogger("livestream")


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="config file (default: config.toml of the project)")
    common.add_argument("--log-level", default=argparse.SUPPRESS,
                        choices=["debug", "info", "warning", "error"])
    parser = argparse.ArgumentParser(
        prog="livestream", parents=[common],
        description="Self-hosted live streaming with a chat that works without JavaScript.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_with_options(common))

    serve = commands.add_parser("serve", help="run the web server")
    serve.add_argument("--host", help="address to listen on (env LIVESTREAM_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (env LIVESTREAM_PORT)")
    serve.add_argument("--stream-dir", help="folder ffmpeg writes into (env LIVESTREAM_STREAM_DIR)")
    serve.add_argument("--demo", action="store_true",
                       help="also run ./stream.sh --test so there is something live at once")
    serve.add_argument("--onion", action="store_true", default=None,
                       help="publish as a Tor onion service (config [tor]); listens on loopback")
    serve.add_argument("--clearnet", action="store_true", default=None,
                       help="with --onion: also listen on --host, not only on 127.0.0.1")
    serve.add_argument("--origin", metavar="URL",
                       help="run as an edge: pull the stream of the livestream server at URL "
                            "(http://host:port or http://xyz.onion; config relay.origin)")
    serve.add_argument("--workers", type=int,
                       help="processes sharing the port, one core each ([server] workers; "
                            "more than 1 needs [store] redis_url)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal
    serve.add_argument("--private-origin", action="store_true",
                       help="only an origin for this machine's SSH tunnel (`cloud play`): "
                            "loopback, one process, no onion service, ingest, edge, Redis "
                            "or hooks")
    serve.set_defaults(run=run_serve)
    add_source_commands(commands)

    onion = commands.add_parser("onion", help="onion address and client authorization keys")
    onion.add_argument("action", choices=["address", "add-client", "remove-client", "clients",
                                          "balance", "backend"],
                       help="show the address; invite, uninvite or list private-stream viewers; "
                            "balance: one front address over backends (Onionbalance); "
                            "backend: publish this server as a backend of --front")
    onion.add_argument("name", nargs="?", help="the viewer's name (add-client, remove-client)")
    onion.add_argument("--backend", action="append", default=[], metavar="ADDRESS",
                       help="balance: a backend's onion address; repeat for each")
    onion.add_argument("--front", metavar="ADDRESS", help="backend: the front's onion address")
    onion.add_argument("--testnet", action="store_true",
                       help="balance: a private test Tor network (onionbalance --is-testnet)")
    onion.set_defaults(run=run_onion)

    add_cloud_commands(commands)

    for action, text in (("backup", "write the stream's identity and state into FILE"),
                         ("restore", "put a backup's state back into the state folder")):
        keep = commands.add_parser(action, help=text)
        keep.add_argument("file", type=Path, help="the backup file")
        keep.add_argument("--passphrase-file", type=Path,
                          help="encrypt / decrypt with the passphrase in this file (or env "
                               "LIVESTREAM_BACKUP_PASSPHRASE)")
        if action == "backup":
            keep.add_argument("--encrypt", action="store_true",
                              help="ask for a passphrase to encrypt with")
        else:
            keep.add_argument("--force", action="store_true",
                              help="replace the state of a different stream")
        keep.set_defaults(run=run_backup)

    service = commands.add_parser("service", help="run this checkout as systemd services "
                                                  "(start at boot, restart on failure)")
    service.add_argument("action", choices=["install", "uninstall", "status"])
    service.add_argument("--user", action="store_true",
                         help="your own user's services instead of system ones")
    service.add_argument("--ingest", action="store_true",
                         help="also the RTMP ingest as a service of its own")
    service.add_argument("--unit-dir", type=Path, help="where to write the unit files "
                         "(default /etc/systemd/system, or ~/.config/systemd/user)")
    service.add_argument("--no-start", action="store_true",
                         help="only write the unit files (no user, no systemctl)")
    service.set_defaults(run=run_service)

    doctor = commands.add_parser("doctor", help="check every part this config needs and say "
                                                "what to do about each problem")
    doctor.set_defaults(run=run_doctor)

    owner = commands.add_parser("broadcaster", help="the broadcaster's way in")
    owner.add_argument("action", choices=["login-link"],
                       help="print a one-time login link for /broadcaster (works once, for "
                            "10 minutes, even while failed logins are locked)")
    owner.add_argument("--base-url", help="address viewers use, e.g. http://xyz.onion "
                                          "(default: this machine's server address)")
    owner.set_defaults(run=run_broadcaster)

    chat = commands.add_parser("chat", help="the chat's messages")
    chat.add_argument("action", choices=["export"],
                      help="write every kept message (hidden ones marked) to standard output")
    chat.add_argument("--format", choices=["json", "csv", "txt"], default="txt")
    chat.add_argument("--since", default="",
                      help="only messages from this long ago (30m, 2h, 1d) or this UTC time "
                           "on (2026-12-06T20:00)")
    chat.set_defaults(run=run_chat)

    mods = commands.add_parser("moderators", help="who moderates the chat, by tripcode")
    mods.add_argument("action", choices=["add", "remove", "list"])
    mods.add_argument("tripcode", nargs="?", help="add/remove: the tripcode (with or without !)")
    mods.add_argument("--note", default="", help="add: who it is, for you")
    mods.set_defaults(run=run_moderators)

    invite = commands.add_parser("invite", help="invite links for an invite-only stream "
                                                "([access] invite_only)")
    invite.add_argument("action", choices=["new", "list", "revoke"])
    invite.add_argument("id", nargs="?", help="revoke: the invite's id (from list)")
    invite.add_argument("--many", action="store_true",
                        help="new: for anyone with the link (default: one person)")
    invite.add_argument("--hours", type=float, default=0.0,
                        help="new: expires after this many hours (default: never)")
    invite.add_argument("--note", default="", help="new: for whom, to recognise it later")
    invite.add_argument("--base-url", help="new: the address viewers use, e.g. "
                                           "http://xyz.onion (default: this machine's)")
    invite.set_defaults(run=run_invite)

    schedule = commands.add_parser("schedule", help="the next stream, shown on the offline "
                                                    "page (no argument: show it)")
    schedule.add_argument("action", nargs="?", choices=["set", "clear"])
    schedule.add_argument("at", nargs="?", help="set: a UTC time, e.g. 2026-12-08T20:00")
    schedule.add_argument("--note", default="", help="set: a line for the viewers")
    schedule.add_argument("--chat-closed", action="store_true",
                          help="set: the chat stays closed until the stream starts")
    schedule.set_defaults(run=run_schedule)

    control = commands.add_parser(
        "control", help="the broadcaster's powers from a script: state/control.sock")
    control.add_argument("command", choices=["title", "say", "hide", "ban", "unban", "filter",
                                             "unfilter", "party", "modes", "status"])
    control.add_argument("value", nargs="*",
                         help="title/say: the text; hide/ban/unban: a message id; filter: a "
                              "pattern; unfilter: a filter id; party: pause, resume, seek "
                              "+30, next, prev or status; modes: slow=30 established=10 "
                              "closed=yes (none: show them)")
    control.add_argument("--hide-all", action="store_true",
                         help="ban: hide every message of that viewer too")
    control.add_argument("--minutes", type=int, default=0,
                         help="ban: for this many minutes (default: for good)")
    control.add_argument("--action", default="censor", choices=["censor", "block", "ban"],
                         help="filter: what a matching message gets")
    control.add_argument("--regex", action="store_true", help="filter: a regular expression")
    control.set_defaults(run=run_control)

    events = commands.add_parser("events", help="print every event as a JSON line "
                                                 "(state/events.sock) until Ctrl-C")
    events.add_argument("--count", type=int, default=0, help="stop after this many")
    events.set_defaults(run=run_events)

    from app.sources.party.queue import split_play_argv

    argv, later_items = split_play_argv(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    args.later_items = later_items  # `play a.mkv --subs 0 -- b.mkv ...`: the watch party queue
    args.config = getattr(args, "config", None)
    args.log_level = getattr(args, "log_level", None)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=(args.log_level or config.server.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.run(args, config)


def _with_options(common: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """A parser class that takes the global options too, so `livestream key --config X`
    works as well as `livestream --config X key`, for every command and sub-command."""

    class CommandParser(argparse.ArgumentParser):
        def __init__(self, *args, parents=(), **kwargs):
            super().__init__(*args, parents=[*parents, common], **kwargs)

    return CommandParser


def load_config(args: argparse.Namespace) -> Config:
    overrides = configuration.environment_overrides()
    flags = {
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "stream.dir": getattr(args, "stream_dir", None),
        "server.log_level": args.log_level,
        "tor.enabled": getattr(args, "onion", None),
        "tor.clearnet": getattr(args, "clearnet", None),
        "server.workers": getattr(args, "workers", None),
        "ingest.host": getattr(args, "ingest_host", None),
        "ingest.port": getattr(args, "ingest_port", None),
        "relay.origin": getattr(args, "origin", None),
    }
    if getattr(args, "private_origin", False):
        flags.update({"server.host": "127.0.0.1", "server.workers": 1, "tor.enabled": False,
                      "ingest.enabled": False, "relay.origin": "", "store.redis_url": "",
                      "hooks.events_socket": False, "hooks.control_socket": False,
                      "webhooks.urls": []})
    # a flag that was not given must not hide the environment variable for the same key
    overrides.update({key: value for key, value in flags.items() if value is not None})
    config = configuration.load(args.config, overrides)
    warn_about_a_new_state_folder(config)
    return config


def warn_about_a_new_state_folder(config: Config) -> None:
    """A config file elsewhere resolves `state_dir` against its own folder: without a word,
    the stream would get a new password, stream key and onion address."""
    if config.state_dir.exists():
        return
    try:
        usual = configuration.load(None).state_dir if config.source else None
    except ConfigError:
        return  # the project's own config is broken: nothing to compare with
    if usual is None or usual == config.state_dir or not usual.exists():
        return
    print(f"livestream: note: the state folder {config.state_dir} does not exist yet, so a new "
          f"broadcaster password, stream key and onion address will be made there "
          f"(server.state_dir in {config.source} is relative to that file). To keep the ones "
          f"in {usual}, set server.state_dir = \"{usual}\".", file=sys.stderr)


CIRCUIT_PORT_VARIABLE = "LIVESTREAM_CIRCUIT_PORT"  # the workers' shared circuit listener


def run_serve(args: argparse.Namespace, config: Config) -> int:
    from app import create_app
    from app.onion.service import listen_host
    from app.runtime.signals import stop_event
    from app.web.server import make_server, serve_forever

    if getattr(args, "worker", False):
        return run_worker(config)
    if config.server.workers > 1 and not config.store.redis_url:
        print(f"livestream: {config.server.workers} workers need a shared store: set [store] "
              "redis_url (or env LIVESTREAM_REDIS_URL), e.g. redis://127.0.0.1:6379/0, so "
              "every worker sees the same chat, bans and viewers; or run one worker.",
              file=sys.stderr)
        return 2
    try:
        app = create_app(config)
    except RuntimeError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    services = app.services
    host = listen_host(config)
    if config.server.workers > 1:
        return supervise_workers(args, config, services, host)
    if host != config.server.host:
        log.info("onion mode: listening on %s only (ask for %s with --clearnet or "
                 "tor.clearnet = true)", host, config.server.host)
    try:
        server = make_server(app, (host, config.server.port), config.stream.send_timeout,
                             config.server.header_timeout)
        server.init_socket()
        circuits = start_circuit_listener(app, config, config.tor.circuit_port)
    except OSError as exc:
        services.stop()
        print(f"livestream: cannot listen on {host}:{config.server.port}: "
              f"{exc.strerror}. Is another server running? Pick one with --port.",
              file=sys.stderr)
        return 1
    services.start()
    # the stop signals are caught before the side jobs start: a SIGTERM while tor starts
    # must still run the clean-up (remove the onion service, stop tor, forget a throwaway
    # address), not kill the process where it stands
    stopping = stop_event()
    started, onion = start_side_jobs(args, config, services, stopping,
                                     circuits.server_port if circuits else None)
    if not started:
        return 1
    log.info("watch at http://%s:%d/", host, config.server.port)
    warn_about_open_addresses(config, host)
    serve_forever(server, services, stopping)
    return 1 if onion is not None and onion.failed else 0


def uses_circuits(config: Config) -> bool:
    """Tor is to tell each connection's circuit (app/web/clients.py): our onion service
    asks for it, or a backend's (`livestream onion backend`) points at tor.circuit_port."""
    return (config.tor.enabled and config.tor.circuits) or config.tor.circuit_port != 0


def start_circuit_listener(app, config: Config, port: int, shared: bool = False):
    """The listener only our tor connects to (each connection opens with tor's PROXY line),
    on 127.0.0.1:`port` (0: any free port); None when tor cannot tell circuits. `shared`:
    a worker, binding the port the other workers bind too."""
    from app.runtime.workers import reuse_port_listener
    from app.web.server import CircuitHandler, make_server

    if not uses_circuits(config):
        return None
    listener = reuse_port_listener("127.0.0.1", port) if shared else ("127.0.0.1", port)
    server = make_server(app, listener, config.stream.send_timeout,
                         config.server.header_timeout, handler_class=CircuitHandler)
    server.start()
    app.services.adopt(lambda: server.stop(timeout=2))
    return server


def start_side_jobs(args: argparse.Namespace, config: Config, services,
                    stopping: gevent.event.Event,
                    circuit_port: int | None = None) -> tuple[bool, OnionService | None]:
    """The jobs that run once beside the web app, whatever the number of workers: the onion
    service, the ingest, the demo source and the edge puller. `services` adopts each, so its
    stop() ends them. (False, None) when the onion service could not start (said why)."""
    onion = None
    if config.tor.enabled:
        onion = start_onion(config, stopping, circuit_port)
        if onion is None:
            services.stop()
            return False, None
        services.adopt(onion.stop)
        services.budgets.on_abuse = closes_circuits(onion)
        services.extra_figures.append(onion.traffic)
    if config.ingest.enabled:
        services.adopt(start_ingest_alongside(config))
    if args.demo:
        demo = start_demo_source(config)
        services.adopt(lambda: processes.stop(demo, 10.0, signal.SIGINT, group=True))
    if config.relay.origin:
        try:
            services.adopt(start_edge(config))
        except FolderBusy as exc:
            print(f"livestream serve: {exc}", file=sys.stderr)
            services.stop()
            return False, None
    return True, onion


def start_edge(config: Config, origin: str = "",
               who: str = "livestream serve --origin") -> Callable[[], None]:
    """The relay puller feeding this server's stream folder from the origin (relay.origin
    unless given); its stop. FolderBusy when another source writes that folder."""
    from urllib.parse import urlsplit

    from app.sources.relay import RelaySettings, start_relay

    relay = config.relay
    origin = origin or relay.origin
    if config.ingest.enabled:
        log.warning("edge: the ingest also writes into %s; a publisher will be refused while "
                    "the edge runs", config.stream_dir)
    held = take_folder(config, f"{who} (an edge of {urlsplit(origin).hostname})")
    stop = start_relay(RelaySettings(
        origin=origin, playlist=config.stream.playlist,
        poll_interval=relay.poll_interval, connect_timeout=relay.connect_timeout,
        read_timeout=relay.read_timeout, retry_max=relay.retry_max, tor_socks=relay.tor_socks,
        max_segment_bytes=config.stream.max_segment_bytes), config.stream_dir)

    def stop_and_release() -> None:
        stop()
        held.release()

    return stop_and_release


def run_worker(config: Config) -> int:
    """One of `--workers N`: only the web app, on a port shared with the other workers."""
    from app import create_app
    from app.runtime.processes import die_with_parent
    from app.runtime.workers import reuse_port_listener
    from app.web.server import Server, serve_forever

    die_with_parent()
    try:
        app = create_app(config)
    except RuntimeError as exc:
        print(f"livestream worker: {exc}", file=sys.stderr)
        return 1
    host, port = config.server.host, config.server.port
    try:
        listener = reuse_port_listener(host, port)
    except OSError as exc:
        app.services.stop()
        print(f"livestream worker: cannot listen on {host}:{port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    from app.web.server import QuietHandler, raise_file_limit

    raise_file_limit()
    server = Server(listener, app, config.stream.send_timeout, config.server.header_timeout,
                    handler_class=QuietHandler, log=None,
                    error_log=logging.getLogger("app.web.server.errors"))
    circuit_port = int(os.environ.get(CIRCUIT_PORT_VARIABLE, "0"))
    if circuit_port:
        start_circuit_listener(app, config, circuit_port, shared=True)
    app.services.start()
    log.info("worker pid %d serving on %s:%d", os.getpid(), host, port)
    serve_forever(server, app.services)
    return 0


def supervise_workers(args: argparse.Namespace, config: Config, services, host: str) -> int:
    """The parent of `--workers N`: the once-only jobs (onion, ingest, demo, edge puller) and
    the workers.

    `services` was built here only to check the state (Redis reachable, the broadcaster
    password made once) and to own the once-only jobs; it serves no request."""
    from app.runtime.signals import stop_event
    from app.runtime.workers import Supervisor, port_is_free, reuse_port_listener, worker_argv

    port = config.server.port
    try:
        port_is_free(host, port)
    except OSError as exc:
        services.stop()
        print(f"livestream: cannot listen on {host}:{port}: {exc.strerror}. Is another "
              "server running? Pick one with --port.", file=sys.stderr)
        return 1
    stopping = stop_event()
    circuit_port = None
    if uses_circuits(config):  # a port every worker binds (SO_REUSEPORT); 0: a free one
        probe = reuse_port_listener("127.0.0.1", config.tor.circuit_port, backlog=1)
        circuit_port = probe.getsockname()[1]
        probe.close()
        os.environ[CIRCUIT_PORT_VARIABLE] = str(circuit_port)
    started, onion = start_side_jobs(args, config, services, stopping, circuit_port)
    if not started:
        return 1
    supervisor = Supervisor(worker_argv(args.config, host, port, str(config.stream_dir),
                                        args.log_level), config.server.workers, stopping)
    supervisor.start()
    log.info("watch at http://%s:%d/ (%d workers)", host, port, config.server.workers)
    warn_about_open_addresses(config, host)
    try:
        stopping.wait()
    finally:
        log.info("shutting down")
        supervisor.stop()
        services.stop()
    return 1 if onion is not None and onion.failed else 0


def closes_circuits(onion: OnionService) -> Callable[[str], None]:
    """What the budgets do with a client that keeps pushing: close its circuit, if it is one."""
    import gevent

    from app.web.clients import circuit_id

    def close(client: str) -> None:
        circuit = circuit_id(client)
        if circuit is not None:
            log.info("closing a circuit that kept going over its budgets")
            gevent.spawn(onion.close_circuit, circuit)

    return close


def start_onion(config: Config, stopping: gevent.event.Event,
                circuit_port: int | None = None) -> OnionService | None:
    """Publish the onion service and print its address; None (after saying why) on failure."""
    from app.onion.service import OnionService, TorError

    onion = OnionService(config, config.server.port, circuit_port)
    try:
        address = onion.start()
    except TorError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return None
    print(f"onion address: http://{address}/ (not reachable yet: tor is connecting and "
          f"publishing it; wait for \"reachable\" below)", flush=True)
    if onion.defenses:
        print("onion service defenses: " + ", ".join(onion.defenses), flush=True)
    if not config.tor.pow or not any("proof-of-work" in d for d in onion.defenses):
        print("warning: the onion service runs without proof-of-work (tor.pow, or a tor "
              "without its pow module): a flood of connections costs its sender little",
              file=sys.stderr, flush=True)
    if not onion.uses_circuits:
        print("note: tor does not tell which circuit a viewer came through (tor.circuits is "
              "off, or the attached tor cannot read a service folder of ours), so the "
              "per-client budgets ([budgets]) do not apply to onion viewers",
              file=sys.stderr, flush=True)
    follow_reachability(onion, config.tor.reachable_timeout)
    if config.tor.client_auth:
        print("client authorization is on: only viewers given a key by "
              "`livestream onion add-client NAME` can open it", flush=True)

    def on_fatal(message: str) -> None:
        print(f"livestream: {message}", file=sys.stderr, flush=True)
        stopping.set()

    onion.watch(on_fatal)
    return onion


def follow_reachability(onion: OnionService, limit: float) -> None:
    """Beside the server: say when the address is really up, or after `limit` s why not."""
    import gevent

    from app.onion import reachability

    def say(line: str) -> None:
        print(line, flush=True)

    gevent.spawn(reachability.follow, onion, onion.published.wait, limit, say,
                 onion.stopping)


def warn_about_open_addresses(config: Config, host: str) -> None:
    """A server on a public address: where friends reach it, and the broadcaster's risk."""
    if host.startswith("127.") or host in ("localhost", "::1"):
        return
    port = config.server.port
    for address in (outward_addresses(host == "::") if host in ("0.0.0.0", "::") else [host]):
        print(f"friends on your network (or the internet, with the port open): "
              f"http://{address}:{port}/", flush=True)
    if config.broadcaster.allow_clearnet:
        print("warning: /broadcaster over plain http:// sends its password (and session) in "
              "clear on this address; open it from this machine, through the onion address "
              "or an SSH tunnel, and set [broadcaster] allow_clearnet = false to refuse it "
              "elsewhere", file=sys.stderr, flush=True)


def run_onion(args: argparse.Namespace, config: Config) -> int:
    from app.onion import keys as onion_keys
    from app.onion.service import OnionPaths, TorError, load_or_create_key, stored_address

    if args.action in ("balance", "backend"):
        from app.onion import balance

        if args.action == "balance":
            return balance.run_front_command(config, args.backend, args.testnet)
        if not args.front:
            print("livestream: onion backend needs --front ADDRESS", file=sys.stderr)
            return 2
        return balance.run_backend_command(config, args.front)
    paths = OnionPaths.from_config(config)
    try:
        if args.action == "address":
            address = stored_address(config)
            if address is None:
                print("no onion key yet: `livestream serve --onion` makes one", file=sys.stderr)
                return 1
            print(address)
        elif args.action == "clients":
            for name, public in onion_keys.authorized_clients(paths.clients_dir).items():
                print(f"{name}  descriptor:x25519:{public}")
        elif args.name is None:
            print(f"livestream: onion {args.action} needs a NAME", file=sys.stderr)
            return 2
        elif args.action == "remove-client":
            if not onion_keys.remove_client(paths.clients_dir, args.name):
                print(f"livestream: no client named {args.name!r}", file=sys.stderr)
                return 1
            print(f"removed {args.name}; restart `livestream serve` for tor to forget the key")
        else:
            address = None if config.tor.ephemeral else load_or_create_key(paths).address
            keys = onion_keys.add_client(paths.clients_dir, args.name)
            print(f"Added {args.name}. Give them this key; Tor Browser asks for it when the "
                  f"address is opened:\n\n    {keys.private}\n")
            if address:
                print(f"Address: http://{address}/\nFor a tor ClientOnionAuthDir file "
                      f"({args.name}.auth_private):\n\n    {keys.tor_browser_line(address)}\n")
            print("The private key is not stored anywhere: keep this output safe. Set "
                  "tor.client_auth = true and restart `livestream serve` to apply.")
    except (TorError, onion_keys.KeyFileError) as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 1
    return 0


def add_cloud_commands(commands: argparse._SubParsersAction) -> None:
    token = argparse.ArgumentParser(add_help=False)
    token.add_argument("--api-key", help="DigitalOcean API token (better: env DIGITALOCEAN_TOKEN "
                       "or [cloud] token_file, which other users cannot see in the process list)")
    droplet = argparse.ArgumentParser(add_help=False)
    droplet.add_argument("--region", help="region slug, e.g. fra1 ([cloud] region)")
    droplet.add_argument("--size", help="size slug or 'cheapest' ([cloud] size)")
    droplet.add_argument("--image", help="image slug, e.g. debian-12-x64 ([cloud] image)")
    droplet.add_argument("--ssh-key", action="append", dest="ssh_keys",
                         help="SSH key ID or fingerprint; repeat for several ([cloud] ssh_keys)")
    droplet.add_argument("--another", action="store_true",
                         help="create a droplet even though one of ours exists")
    droplet.add_argument("--in-clear", action="store_true", default=None,
                         help="push plain RTMP to the droplet's public address instead of "
                              "through SSH: the stream key and video readable on the way "
                              "([cloud] in_clear)")

    cloud = commands.add_parser("cloud", help="a cheap DigitalOcean droplet for the evening")
    actions = cloud.add_subparsers(dest="cloud_action", required=True, metavar="ACTION")
    actions.add_parser("up", parents=[token, droplet],
                       help="create a droplet running the server and the RTMP ingest")
    actions.add_parser("down", parents=[token], help="destroy every droplet with our tag")
    actions.add_parser("status", parents=[token], help="list our droplets, uptime and cost")
    play = actions.add_parser("play", parents=[token, droplet],
                              help="check the files, up, stream them to the droplet as "
                                   "`livestream play` would, destroy it at the end")
    add_play_options(play, size_flag="--video-size")
    cloud.set_defaults(run=run_cloud)

    estimate = commands.add_parser("estimate", help="transfer and cost of a stream")
    estimate.add_argument("--viewers", type=int, required=True, help="number of viewers")
    estimate.add_argument("--hours", type=float, required=True, help="length of one session")
    estimate.add_argument("--bitrate", type=float, required=True, help="stream bitrate, kbit/s")
    estimate.add_argument("--uplink", type=float, help="your upload speed, Mbit/s")
    estimate.add_argument("--size", default="cheapest",
                          help="droplet size slug from [cloud.prices.sizes] (default: cheapest)")
    estimate.add_argument("--sessions", type=int, default=4,
                          help="sessions per month, one fresh droplet each (default 4)")
    estimate.set_defaults(run=run_estimate)


def run_cloud(args: argparse.Namespace, config: Config) -> int:
    from app.cloud import deploy as cloud

    return cloud.run(args.cloud_action, config, api_key=args.api_key,
                     options={"region": args.__dict__.get("region"),
                              "size": args.__dict__.get("size"),
                              "image": args.__dict__.get("image"),
                              "ssh_keys": args.__dict__.get("ssh_keys"),
                              "in_clear": args.__dict__.get("in_clear")},
                     another=args.__dict__.get("another", False),
                     play_args=play_arguments(args) if args.cloud_action == "play" else None)


def run_estimate(args: argparse.Namespace, config: Config) -> int:
    from app.cloud import estimate

    return estimate.run(args, config.cloud.prices)


def start_demo_source(config: Config) -> subprocess.Popen:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("livestream: --demo needs ffmpeg: sudo apt-get install ffmpeg")
    from app.sources.ffmpeg import stream_sh_environment

    env = dict(os.environ, **stream_sh_environment(config))
    log.info("demo: streaming a test pattern into %s", config.stream_dir)
    return subprocess.Popen([str(PROJECT_DIR / "stream.sh"), "--test"], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=processes.dies_with_us(signal.SIGTERM))


# `play`'s options that `cloud play` passes on as they are: (attribute, flag, takes a value)
PLAY_OPTIONS = [("subs", "--subs", True), ("audio", "--audio", True),
                ("start", "--start", True), ("video_size", "--size", True),
                ("bitrate", "--bitrate", True), ("preset", "--preset", True),
                ("hwaccel", "--hwaccel", True), ("start_at", "--start-at", True),
                ("start_in", "--in", True), ("loop", "--loop", False),
                ("party", "--party", False)]


def add_play_options(parser: argparse.ArgumentParser, size_flag: str = "--size") -> None:
    """What to play and how: shared by `play` and `cloud play` (where --size is the droplet's
    and the picture's is --video-size)."""
    parser.add_argument("source", metavar="FILE|URL", nargs="+",
                        help="one or more files, URLs or .m3u lists; `--` starts a new group "
                             "with its own --subs/--audio/--start (a watch party queue)")
    parser.add_argument("--subs", metavar="N|PATH",
                        help="burn in subtitle track N (from 0) or a .srt/.ass/.vtt file")
    parser.add_argument("--audio", type=int, metavar="N", help="audio track number (from 0)")
    parser.add_argument("--start", metavar="HH:MM:SS", help="start this far into the input")
    parser.add_argument("--loop", action="store_true", help="start over at the end, forever")
    parser.add_argument(size_flag, dest="video_size", metavar="WxH",
                        help="scale (and letterbox) the picture to this size")
    parser.add_argument("--bitrate", metavar="K", help="video bitrate in kbit/s (default 1500)")
    parser.add_argument("--preset", metavar="P", help="x264 preset (default veryfast)")
    parser.add_argument("--hwaccel", metavar="NAME",
                        help="hardware encoder: vaapi, nvenc, videotoolbox, qsv, v4l2m2m, amf")
    parser.add_argument("--party", action="store_true",
                        help="take host controls (pause, seek) even for one file; implied by "
                             "several files, an .m3u, --start-at or --in")
    parser.add_argument("--start-at", metavar="HH:MM",
                        help="show a countdown and start for everyone at this time of day")
    parser.add_argument("--in", dest="start_in", metavar="5m",
                        help="show a countdown and start after this long (90s, 5m, 1h30m)")


def play_arguments(args: argparse.Namespace) -> list[str]:
    """The `play` command line for these parsed options (sources, options, `--` groups)."""
    out = list(args.source)
    for attribute, flag, takes_value in PLAY_OPTIONS:
        value = getattr(args, attribute, None)
        if takes_value and value is not None:
            out += [flag, str(value)]
        elif not takes_value and value:
            out.append(flag)
    for group in args.later_items:
        out += ["--", *group]
    return out


def add_source_commands(commands: argparse._SubParsersAction) -> None:
    """`play`, `ingest` and `key`: the ways to feed stream/ besides stream.sh."""
    play = commands.add_parser(
        "play", help="stream a file or URL in real time (subtitles burned in)",
        description="Stream a movie or URL in real time into the stream folder (or to a remote "
                    "RTMP ingest with --to). H.264/AAC input is copied without re-encoding "
                    "unless an option needs a new picture.")
    add_play_options(play)
    play.add_argument("--to", metavar="rtmp://HOST/live/KEY",
                      help="push to a remote livestream ingest instead of the local folder")
    play.add_argument("--stream-dir", help="folder to write into (env LIVESTREAM_STREAM_DIR)")
    play.add_argument("--dry-run", action="store_true",
                      help="check the input and print the ffmpeg command, run nothing")
    play.set_defaults(run=run_play)

    party = commands.add_parser(
        "party", help="control the running watch party (pause, resume, seek, next, prev)",
        description="Send a control to the `livestream play` queue running on this machine "
                    "(a Unix socket in the state folder that only your user can open).")
    party.add_argument("action", choices=["pause", "resume", "seek", "next", "prev", "status"])
    party.add_argument("target", nargs="?",
                       help="for seek: +30, -10 (relative) or 1:02:03 (in the current item)")
    party.set_defaults(run=run_party)

    ingest = commands.add_parser("ingest", help="accept an RTMP publisher (OBS, VLC, ffmpeg)")
    ingest.add_argument("--host", dest="ingest_host",
                        help="address to listen on (default every interface; 127.0.0.1 "
                             "when [tor] enabled)")
    ingest.add_argument("--port", dest="ingest_port", type=int,
                        help="RTMP port (default 1935)")
    ingest.add_argument("--stream-dir", help="folder to write into (env LIVESTREAM_STREAM_DIR)")
    ingest.set_defaults(run=run_ingest)

    key = commands.add_parser("key", help="show the RTMP stream key (made on first use)")
    key.add_argument("--new", action="store_true",
                     help="replace the key; publishers using the old one are refused")
    key.set_defaults(run=run_key)

    segment = commands.add_parser(
        "segment", help="fragmented MP4 on standard input into the stream folder, each "
                        "fragment as it comes (low latency; see README)")
    segment.add_argument("--rendition", default="",
                         help="a lower rendition's name (files NAME.m3u8, NAME-init.mp4, "
                              "NAME-N.m4s); empty: the top one, which takes the folder")
    segment.add_argument("--segment-seconds", type=float, default=2.0,
                         help="a new segment at the first keyframe after this long")
    segment.add_argument("--playlist", default=None,
                         help="the top rendition's playlist name (default: stream.playlist)")
    segment.add_argument("--locked", action="store_true",
                         help="the caller holds the folder's lock (stream.sh does)")
    segment.set_defaults(run=run_segment)

    follow = commands.add_parser(
        "follow", help="pull another livestream server's stream into this stream folder (an "
                       "edge's puller on its own, beside a running `serve`)",
        description="What `serve --origin URL` does, as its own process: the server running "
                    "beside it serves what it writes. `livestream cloud play` runs it on the "
                    "droplet through SSH, with the party's controls on standard input/output.")
    follow.add_argument("follow_origin", metavar="URL",
                        help="the origin server (http://host:port)")
    follow.add_argument("--controls-over-stdio", action="store_true",
                        help="answer this server's party controls (/broadcaster, `livestream "
                             "party`) by asking over standard output and reading the answer "
                             "on standard input; end when standard input closes")
    follow.set_defaults(run=run_follow)


def run_play(args: argparse.Namespace, config: Config) -> int:
    from app.sources import ffmpeg, last_word, options, play
    from app.sources.party import control, queue

    party = (args.party or len(args.source) > 1 or bool(args.later_items)
             or args.start_at or args.start_in or queue.is_playlist_file(args.source[0]))
    folder_lock, guard_done = None, None
    if not args.dry_run:  # before anything probes the input or touches the folder
        try:
            control.refuse_second_play(config.state_dir)
            if not args.to:
                shown = (ffmpeg.redact_url(s) if "://" in s else s for s in args.source)
                folder_lock = take_folder(config, "livestream play " + " ".join(shown))
        except (control.ControlError, FolderBusy) as exc:
            print(f"livestream play: {exc}", file=sys.stderr)
            return 1
    signals.interrupt_on_stop()  # SIGTERM/SIGHUP: stop ffmpeg and end the playlist, as Ctrl-C
    pass_fds = (folder_lock.fd,) if folder_lock else ()
    try:
        if folder_lock is not None:
            guard_done = last_word.start(config.stream_dir, [config.stream.playlist] + [
                f"{r.name}.m3u8" for r in config.stream.renditions[1:]])
        if party and not args.loop:
            return run_party_play(args, config, pass_fds)
        if party:
            raise options.SourceError("--loop plays one file; a queue cannot loop yet")
        chosen = ffmpeg.PlayOptions(
            source=args.source[0], subs=args.subs, audio=args.audio,
            start=options.parse_time(args.start) if args.start else 0.0, loop=args.loop,
            size=options.parse_size(args.video_size) if args.video_size else None,
            video_kbps=options.parse_kbps(args.bitrate) if args.bitrate else None,
            preset=args.preset, hwaccel=args.hwaccel, to=args.to)
        if chosen.audio is not None and chosen.audio < 0:
            raise options.SourceError("--audio: track numbers start at 0")
        return play.play(chosen, config.stream_dir, config.stream.playlist,
                         dry_run=args.dry_run, renditions=config.stream.renditions,
                         pass_fds=pass_fds, part_ms=config.stream.part_ms)
    except options.SourceError as exc:
        print(f"livestream play: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if folder_lock is not None:
            folder_lock.release()  # first: the guard waits for it
        if guard_done is not None:
            guard_done()


def run_follow(args: argparse.Namespace, config: Config) -> int:
    """`livestream follow URL`: the edge's puller until stopped (or, with the controls, until
    whoever started it closes standard input)."""
    import threading

    from app.sources.party import bridge as party_bridge
    from app.sources.party import control

    origin = args.follow_origin
    if not origin.startswith(("http://", "https://")):
        print(f"livestream follow: the origin must start with http:// or https:// (got "
              f"{origin[:80]!r})", file=sys.stderr)
        return 2
    signals.interrupt_on_stop()
    try:
        stop = start_edge(config, origin, "livestream follow")
    except FolderBusy as exc:
        print(f"livestream follow: {exc}", file=sys.stderr)
        return 1
    controls = None
    try:
        if args.controls_over_stdio:
            controls = party_bridge.StdioBridge(config.state_dir,
                                                *party_bridge.standard_streams())
            controls.start()
            controls.gone.wait()
        else:
            threading.Event().wait()
    except control.ControlError as exc:
        print(f"livestream follow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if controls is not None:
            controls.stop()
        stop()
    return 0


def take_folder(config: Config, who: str):
    """The stream folder's lock for this source (app/stream/lock.py), or FolderBusy."""
    from app.stream import lock

    return lock.take(config.stream_dir, who)


def run_party_play(args: argparse.Namespace, config: Config,
                   pass_fds: tuple[int, ...] = ()) -> int:
    """`play` with host controls: the queue runs as one stream (app/sources/party)."""
    from app.sources import ffmpeg, options
    from app.sources.party import control, queue, runner, timeline

    start = options.parse_time(args.start) if args.start else 0.0
    if args.audio is not None and args.audio < 0:
        raise options.SourceError("--audio: track numbers start at 0")
    items = queue.expand(args.source, args.subs, args.audio, start)
    for group in args.later_items:
        items += queue.parse_group(group)
    base = ffmpeg.PlayOptions(
        source=items[0].source,
        size=options.parse_size(args.video_size) if args.video_size else None,
        video_kbps=options.parse_kbps(args.bitrate) if args.bitrate else None,
        preset=args.preset, hwaccel=args.hwaccel, to=args.to)
    starts_at = timeline.start_time(args.start_at, args.start_in)
    party = runner.Party(items, base, config.stream_dir, config.state_dir,
                         config.stream.playlist, starts_at=starts_at,
                         renditions=None if args.to else config.stream.renditions,
                         pass_fds=pass_fds, part_ms=config.stream.part_ms)
    party.check()
    print(f"queue:\n{runner.describe(items, party.infos)}", file=sys.stderr)
    if args.dry_run:
        for item, info in zip(items, party.infos, strict=True):
            argv = runner.run_argv(info, item, base, item.start, 0.0, 0, party.size, party.fps,
                                   config.stream_dir, config.stream.playlist,
                                   party.renditions)
            print(ffmpeg.shell_line(argv))
        return 0
    if args.to:
        print("note: with --to the controls stay on this machine (this play process); each "
              "pause or seek restarts the stream on the server, so viewers reload",
              file=sys.stderr)
    try:
        return party.run()
    except control.ControlError as exc:
        print(f"livestream play: {exc}", file=sys.stderr)
        return 1


def run_party(args: argparse.Namespace, config: Config) -> int:
    """`livestream party ACTION`: one control for the running queue, then its status."""
    from app.sources.options import format_clock
    from app.sources.party import control

    if args.action == "seek" and not args.target:
        print("livestream party seek: give a target: +30, -10 or 1:02:03", file=sys.stderr)
        return 2
    try:
        reply = control.send(config.state_dir, args.action, args.target or "")
    except control.ControlError as exc:
        print(f"livestream party {args.action}: {exc}", file=sys.stderr)
        return 1
    status = reply["status"]
    for number, item in enumerate(status["items"]):
        mark = ">" if number == status["index"] else " "
        where = (f"{format_clock(status['position'])} / " if number == status["index"] else "")
        print(f"{mark} {number + 1}. {item['name']}  {where}{format_clock(item['duration'])}")
    print(status["state"])
    return 0


def control_request(args: argparse.Namespace) -> dict:
    """The control socket's JSON for `livestream control COMMAND VALUE...`."""
    text = " ".join(args.value)
    command = args.command
    if command in ("title", "say"):
        return {"command": command, "text": text}
    if command in ("hide", "ban", "unban"):
        return {"command": command, "message": text, "hide_all": args.hide_all,
                "minutes": args.minutes}
    if command == "filter":
        return {"command": command, "pattern": text, "action": args.action,
                "regex": args.regex}
    if command == "unfilter":
        return {"command": command, "id": text}
    if command == "modes":
        names = {"slow": "slow_seconds", "established": "established_minutes",
                 "closed": "closed"}
        request: dict = {"command": command}
        for pair in args.value:
            name, _, value = pair.partition("=")
            if name not in names:
                raise SystemExit(f"livestream control modes: {pair!r}: use slow=SECONDS, "
                                 "established=MINUTES or closed=yes|no")
            request[names[name]] = value.lower() in ("yes", "true", "1") if name == "closed" \
                else value
        return request
    if command == "party":
        return {"command": command, "action": args.value[0] if args.value else "status",
                "argument": " ".join(args.value[1:])}
    return {"command": command}


def run_control(args: argparse.Namespace, config: Config) -> int:
    """`livestream control ...`: one command to the running server (app/hooks)."""
    from app.hooks.client import HookClientError, control

    try:
        answer = control(config.state_dir, control_request(args))
    except HookClientError as exc:
        print(f"livestream control: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"livestream control {args.command}: {answer.get('error')}", file=sys.stderr)
        return 1
    answer.pop("ok")
    print(json.dumps(answer) if answer else "done")
    return 0


def run_moderators(args: argparse.Namespace, config: Config) -> int:
    """`livestream moderators add|remove|list`, in the store the server reads."""
    from app import open_state
    from app.community.moderators import Moderation, ModerationError

    try:
        moderation = Moderation(open_state(config), chat=None)
        if args.action == "add":
            moderation.add(args.tripcode or "", args.note)
        elif args.action == "remove" and not moderation.remove(args.tripcode or ""):
            print(f"livestream moderators: !{args.tripcode} is not a moderator",
                  file=sys.stderr)
            return 2
    except (RuntimeError, ModerationError) as exc:
        print(f"livestream moderators: {exc}", file=sys.stderr)
        return 1
    for moderator in moderation.moderators():
        print(f"!{moderator['tripcode']}  {moderator['note']}".rstrip())
    return 0


def run_invite(args: argparse.Namespace, config: Config) -> int:
    """`livestream invite new|list|revoke`, in the store the server reads."""
    from app import open_state
    from app.community.invites import InviteBook, InviteError

    try:
        book = InviteBook(open_state(config))
        if args.action == "new":
            _, code = book.new(-1 if args.many else 1, args.hours, args.note)
            # printed, never logged: the link is the way in
            print(f"{server_base(config, args.base_url)}/invite/{code}")
            if not config.access.invite_only:
                print("note: [access] invite_only is off: anyone can watch without it",
                      file=sys.stderr)
        elif args.action == "revoke":
            if not book.revoke(args.id or ""):
                print(f"livestream invite revoke: no invite {args.id!r} (see "
                      "`livestream invite list`)", file=sys.stderr)
                return 2
            print("revoked")
        else:
            for item in book.invites():
                uses = "any number of uses" if item.uses < 0 else f"{item.uses} use(s) left"
                ends = (time.strftime("until %Y-%m-%d %H:%M UTC", time.gmtime(item.expires))
                        if item.expires else "no expiry")
                print(f"{item.id}  {item.note or '-'}  {uses}, {ends}, opened by "
                      f"{len(item.viewers)}")
    except (RuntimeError, InviteError) as exc:
        print(f"livestream invite: {exc}", file=sys.stderr)
        return 1
    return 0


def server_base(config: Config, given: str | None) -> str:
    """The address to print in links: the one given, or this machine's server address."""
    if given:
        return given.rstrip("/")
    host = config.server.host if config.server.host not in ("0.0.0.0", "::", "") \
        else "127.0.0.1"
    return f"http://{host}:{config.server.port}"


def run_schedule(args: argparse.Namespace, config: Config) -> int:
    """`livestream schedule [set TIME | clear]`, in the store the server reads."""
    from app import open_state
    from app.community.schedule import ScheduleBook, ScheduleError, parse_when

    try:
        book = ScheduleBook(open_state(config))
        if args.action == "set":
            book.set(parse_when(args.at or ""), args.note, not args.chat_closed)
        elif args.action == "clear":
            book.clear()
    except (RuntimeError, ScheduleError) as exc:
        print(f"livestream schedule: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RuntimeError) else 2
    planned = book.current()
    print(f"next stream: {planned.when()} ({planned.countdown()})"
          + (f": {planned.note}" if planned.note else "")
          + ("" if planned.chat_open else "; the chat opens with it") if planned
          else "no stream scheduled")
    return 0


def run_events(args: argparse.Namespace, config: Config) -> int:
    from app.hooks.client import HookClientError, follow_events

    try:
        follow_events(config.state_dir, count=args.count)
    except HookClientError as exc:
        print(f"livestream events: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run_ingest(args: argparse.Namespace, config: Config) -> int:
    from app.sources.rtmp import server as ingest

    return ingest.run(config)


def run_segment(args: argparse.Namespace, config: Config) -> int:
    """`ffmpeg ... -f mp4 -movflags +frag_keyframe+empty_moov+default_base_moof
    -frag_duration 200000 pipe:1 | livestream segment`: app/sources/segmenter.py."""
    from app.sources.segmenter import InputError, Segmenter
    from app.stream import folder

    name = args.rendition
    if name and not re.fullmatch(r"[a-z][a-z0-9]{0,15}", name):
        print("livestream segment: --rendition must be a name such as low", file=sys.stderr)
        return 2
    if not 0.5 <= args.segment_seconds <= 30:
        print("livestream segment: --segment-seconds must be between 0.5 and 30",
              file=sys.stderr)
        return 2
    held = None
    config.stream_dir.mkdir(parents=True, exist_ok=True)
    if not name and not args.locked:
        try:
            held = take_folder(config, "livestream segment")
        except FolderBusy as exc:
            print(f"livestream segment: {exc}", file=sys.stderr)
            return 75
        folder.prepare_stream_dir(config.stream_dir, config.stream.playlist)
    playlist = args.playlist or config.stream.playlist
    if "/" in playlist or not playlist.endswith(".m3u8"):
        print("livestream segment: --playlist must be a file name such as stream.m3u8",
              file=sys.stderr)
        return 2
    files = folder.rendition_files(name, not name, playlist)
    segmenter = Segmenter(config.stream_dir, files, args.segment_seconds)
    # Ctrl-C in the terminal reaches the whole pipeline: ffmpeg finishes and closes the pipe,
    # and the end of the input ends the playlist. A SIGTERM meant for this process alone ends
    # it the same way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        segmenter.run(sys.stdin.buffer)
    except InputError as exc:
        print(f"livestream segment: {exc}", file=sys.stderr)
        return 1
    finally:
        if held is not None:
            held.release()
    return 0


def run_key(args: argparse.Namespace, config: Config) -> int:
    from app.sources.rtmp import keys

    try:
        key = keys.rotate_key(config.state_dir) if args.new else keys.load_key(config.state_dir)
    except (ValueError, OSError) as exc:
        print(f"livestream key: {exc}", file=sys.stderr)
        return 1
    from app.sources.rtmp.server import listen_host

    bound = listen_host(config)
    hosts = [(bound, "")] if bound not in ("0.0.0.0", "::") else [
        ("127.0.0.1", "  (on this machine)")] + [
        (address, "  (from your network)") for address in outward_addresses(bound == "::")]
    path = f":{config.ingest.port}/{config.ingest.app}"
    for number, (host, where) in enumerate(hosts):
        label = "server:    " if number == 0 else "           "
        print(f"{label} rtmp://{host}{path}{where}")
    print(f"stream key: {key}")
    if args.new:
        print("(the old key no longer works)")
    return 0


def outward_addresses(ipv6: bool = False) -> list[str]:
    """This machine's address on the network its default route leads to (a UDP socket
    "connected" to a documentation address sends nothing); none when offline. IPv4 only
    unless `ipv6` (a listener on 0.0.0.0 takes no IPv6)."""
    import socket

    found = []
    targets = [(socket.AF_INET, "192.0.2.1")] + ([(socket.AF_INET6, "2001:db8::1")]
                                                if ipv6 else [])
    for family, target in targets:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                address = probe.getsockname()[0]
        except OSError:
            continue
        found.append(f"[{address}]" if family == socket.AF_INET6 else address)
    return found


def run_backup(args: argparse.Namespace, config: Config) -> int:
    """`backup FILE` / `restore FILE`; the passphrase never appears on a command line."""
    from app.runtime import backup

    passphrase = os.environ.get("LIVESTREAM_BACKUP_PASSPHRASE") or None
    try:
        if args.passphrase_file:
            passphrase = args.passphrase_file.read_text().strip()
        if getattr(args, "encrypt", False) and not passphrase:
            import getpass

            passphrase = getpass.getpass("passphrase for the backup: ")
        if args.command == "backup":
            manifest = backup.backup(config, args.file, passphrase)
            print(f"wrote {args.file} (0600{', encrypted' if passphrase else ''}): "
                  f"{len(manifest['files'])} files of {config.state_dir}. Keep it safe: with "
                  "it anyone can be this stream (its onion address and broadcaster password).")
        else:
            manifest = backup.restore(config, args.file, passphrase, args.force)
            print(f"restored {len(manifest['files'])} files into {config.state_dir}; start the "
                  "server again. The backup's config is in config-from-backup.toml there.")
    except (backup.BackupError, OSError) as exc:
        print(f"livestream {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_service(args: argparse.Namespace, config: Config) -> int:
    from app.runtime import service

    kinds = ["serve", "ingest"] if args.ingest else ["serve"]
    try:
        if args.action == "install":
            service.install(config, kinds, args.user, args.unit_dir, not args.no_start)
        elif args.action == "uninstall":
            service.uninstall(kinds, args.user, args.unit_dir)
        else:
            return service.status(kinds, args.user)
    except (service.ServiceError, OSError) as exc:
        print(f"livestream service {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_doctor(args: argparse.Namespace, config: Config) -> int:
    from app.runtime import doctor

    return doctor.run(config)


def run_chat(args: argparse.Namespace, config: Config) -> int:
    """`livestream chat export`: the chat as a file, from the store the server uses (SQLite
    beside a running server is fine: it reads a snapshot)."""
    from app import open_state
    from app.community.export import SinceError, export, parse_since

    try:
        since = parse_since(args.since)
    except SinceError as exc:
        print(f"livestream chat export: --since {exc}", file=sys.stderr)
        return 2
    try:
        store = open_state(config)
    except RuntimeError as exc:
        print(f"livestream chat export: {exc}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(export(store.history(since), args.format))
    finally:
        store.close()
    return 0


def run_broadcaster(args: argparse.Namespace, config: Config) -> int:
    """Print a one-time login link. Anyone who can run this as the server's user owns the
    machine anyway, so the link needs no password and ignores the failed-login lock."""
    from app import open_state
    from app.community.identity import LOGIN_LINK_SECONDS, local_key, new_login_link
    from app.community.store import private_dir

    try:
        store = open_state(config)  # where the server looks: Redis when workers share it
    except RuntimeError as exc:
        print(f"livestream broadcaster: {exc}", file=sys.stderr)
        return 1
    try:
        secret = new_login_link(store, local_key(private_dir(config.state_dir)))
    finally:
        store.close()
    # Printed, on purpose not logged: the link is a secret for the person at this terminal.
    print(f"{server_base(config, args.base_url)}/broadcaster/login?key={secret}")
    print(f"(works once, within {LOGIN_LINK_SECONDS / 60:.0f} minutes; over Tor use "
          "--base-url http://YOUR.onion)", file=sys.stderr)
    return 0


def start_ingest_alongside(config: Config) -> Callable[[], None]:
    """`[ingest] enabled = true`: accept RTMP publishers inside `serve`; returns its stop."""
    from app.sources.rtmp import server as ingest

    server = ingest.IngestServer(config)
    server.start()
    return server.stop


if __name__ == "__main__":
    sys.exit(main())
