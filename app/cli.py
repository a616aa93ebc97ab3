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
    serve.set_defaults(run=run_serve)

    add_cloud_commands(commands)

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
    flags = {
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "stream.dir": getattr(args, "stream_dir", None),
        "server.log_level": args.log_level,
    }
    # a flag that was not given must not hide the environment variable for the same key
    overrides.update({key: value for key, value in flags.items() if value is not None})
    return configuration.load(args.config, overrides)


def run_serve(args, config) -> int:
    from . import create_app
    from .server import make_server, serve_forever

    app = create_app(config)
    cleanups = [app.extensions["stream"].stop]
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


def add_cloud_commands(commands) -> None:
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

    cloud = commands.add_parser("cloud", help="a cheap DigitalOcean droplet for the evening")
    actions = cloud.add_subparsers(dest="cloud_action", required=True, metavar="ACTION")
    actions.add_parser("up", parents=[token, droplet],
                       help="create a droplet running the server and the RTMP ingest")
    actions.add_parser("down", parents=[token], help="destroy every droplet with our tag")
    actions.add_parser("status", parents=[token], help="list our droplets, uptime and cost")
    play = actions.add_parser("play", parents=[token, droplet],
                              help="up, stream FILE to the droplet, destroy it at the end")
    play.add_argument("file", help="video file (or URL) to stream")
    play.add_argument("--subs", help="subtitles to burn in (passed to `livestream play`)")
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


def run_cloud(args, config) -> int:
    from . import cloud

    return cloud.run(args.cloud_action, config, api_key=args.api_key,
                     options={"region": args.__dict__.get("region"),
                              "size": args.__dict__.get("size"),
                              "image": args.__dict__.get("image"),
                              "ssh_keys": args.__dict__.get("ssh_keys")},
                     another=args.__dict__.get("another", False),
                     file=args.__dict__.get("file"), subs=args.__dict__.get("subs"))


def run_estimate(args, config) -> int:
    from . import estimate

    return estimate.run(args, config.cloud.prices)


def start_demo_source(config) -> subprocess.Popen:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("livestream: --demo needs ffmpeg: sudo apt-get install ffmpeg")
    env = dict(os.environ, STREAM_DIR=str(config.stream_dir))
    log.info("demo: streaming a test pattern into %s", config.stream_dir)
    return subprocess.Popen([str(PROJECT_DIR / "stream.sh"), "--test"], env=env,
                            stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
