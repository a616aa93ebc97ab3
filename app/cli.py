"""`livestream`: the front door. Every subcommand is a thin layer over a module."""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from . import config as configuration  # noqa: E402
from .config import PROJECT_DIR, ConfigError  # noqa: E402

log = logging.getLogger("livestream")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="livestream", description=__doc__)
    parser.add_argument("--config", help="config file (default: config.toml of the project)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    serve.set_defaults(run=run_serve)

    onion = commands.add_parser("onion", help="onion address and client authorization keys")
    onion.add_argument("action", choices=["address", "add-client", "remove-client", "clients"],
                       help="show the address; invite, uninvite or list private-stream viewers")
    onion.add_argument("name", nargs="?", help="the viewer's name (add-client, remove-client)")
    onion.set_defaults(run=run_onion)

    args = parser.parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=(args.log_level or config.server.log_level).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.run(args, config)


def load_config(args) -> configuration.Config:
    overrides = configuration.environment_overrides()
    overrides.update({
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "stream.dir": getattr(args, "stream_dir", None),
        "server.log_level": args.log_level,
        "tor.enabled": getattr(args, "onion", None),
        "tor.clearnet": getattr(args, "clearnet", None),
    })
    return configuration.load(args.config, overrides)


def run_serve(args, config) -> int:
    import gevent.event

    from . import create_app
    from .onion import listen_host
    from .server import make_server, serve_forever

    app = create_app(config)
    cleanups = [app.extensions["stream"].stop]
    host = listen_host(config)
    if host != config.server.host:
        log.info("onion mode: listening on %s only (ask for %s with --clearnet or "
                 "tor.clearnet = true)", host, config.server.host)
    try:
        server = make_server(app, host, config.server.port)
        server.init_socket()
    except OSError as exc:
        app.extensions["stream"].stop()
        print(f"livestream: cannot listen on {host}:{config.server.port}: "
              f"{exc.strerror}. Is another server running? Pick one with --port.",
              file=sys.stderr)
        return 1
    stopping = gevent.event.Event()
    onion = None
    if config.tor.enabled:
        onion = start_onion(config, stopping)
        if onion is None:
            app.extensions["stream"].stop()
            return 1
        cleanups.insert(0, onion.stop)
    if args.demo:
        cleanups.insert(0, start_demo_source(config).terminate)
    log.info("watch at http://%s:%d/", host, config.server.port)
    serve_forever(server, cleanups, stopping)
    return 1 if onion is not None and onion.failed else 0


def start_onion(config, stopping):
    """Publish the onion service and print its address; None (after saying why) on failure."""
    from .onion import OnionService, TorError

    onion = OnionService(config, config.server.port)
    try:
        address = onion.start()
    except TorError as exc:
        print(f"livestream: {exc}", file=sys.stderr)
        return None
    print(f"onion address: http://{address}/", flush=True)
    if config.tor.client_auth:
        print("client authorization is on: only viewers given a key by "
              "`livestream onion add-client NAME` can open it", flush=True)

    def on_fatal(message: str) -> None:
        print(f"livestream: {message}", file=sys.stderr, flush=True)
        stopping.set()

    onion.watch(on_fatal)
    return onion


def run_onion(args, config) -> int:
    from . import onion_keys
    from .onion import OnionPaths, TorError, load_or_create_key, stored_address

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


def start_demo_source(config) -> subprocess.Popen:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("livestream: --demo needs ffmpeg: sudo apt-get install ffmpeg")
    env = dict(os.environ, STREAM_DIR=str(config.stream_dir))
    log.info("demo: streaming a test pattern into %s", config.stream_dir)
    return subprocess.Popen([str(PROJECT_DIR / "stream.sh"), "--test"], env=env,
                            stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
