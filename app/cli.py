"""`livestream`: the front door. Every subcommand is a thin layer over a module."""
from gevent import monkey

monkey.patch_all()

import argparse
import logging
import os
import shutil
import subprocess
import sys

from . import config as configuration
from .config import PROJECT_DIR, ConfigError

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
    serve.set_defaults(run=run_serve)

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
    })
    return configuration.load(args.config, overrides)


def run_serve(args, config) -> int:
    from . import create_app
    from .server import make_server, serve_forever

    app = create_app(config)
    cleanups = [app.extensions["stream"].stop, app.extensions["store"].close]
    if args.demo:
        cleanups.insert(0, start_demo_source(config).terminate)
    try:
        server = make_server(app, config.server.host, config.server.port)
    except OSError as exc:
        print(f"livestream: cannot listen on {config.server.host}:{config.server.port}: "
              f"{exc.strerror}. Is another server running? Pick one with --port.",
              file=sys.stderr)
        return 1
    log.info("watch at http://%s:%d/", config.server.host, config.server.port)
    serve_forever(server, cleanups)
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
