"""config.toml -> typed settings.

Every section is a dataclass; the loader checks each key against it so a typo or a wrong
type stops start-up with a message naming the key and the file, instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import toml

from app.stream.folder import DEFAULT_PLAYLIST, MASTER_PLAYLIST

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_DIR / "config.toml"


class ConfigError(Exception):
    """A configuration problem meant for a person to read and fix."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: str = "state"
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    workers: int = 1  # processes sharing the port (SO_REUSEPORT); more than 1 needs Redis


@dataclass
class Rendition:
    """One quality every source writes into stream/ (see [[stream.renditions]] in config.toml).

    The first is the source quality: height and video_kbps 0 mean "as it comes" (copied when
    the input is already browser-ready H.264/AAC). Each further one is encoded from it, for
    viewers whose connection (a slow Tor circuit) cannot carry the top one.
    """

    name: str
    height: int = 0
    video_kbps: int = 0
    audio_kbps: int = 0

    @property
    def bandwidth(self) -> int:
        """Bits per second for the master playlist (0 when it is the unknown source rate)."""
        return (self.video_kbps + self.audio_kbps) * 1000


def _default_renditions() -> list[Rendition]:
    return [Rendition("source"), Rendition("low", height=360, video_kbps=400, audio_kbps=64)]


@dataclass
class StreamConfig:
    dir: str = "stream"
    playlist: str = DEFAULT_PLAYLIST
    title: str = "Live stream"
    offline_after: float = 8.0
    memory_segments: int = 12
    max_segment_bytes: int = 32 * 1024 * 1024
    send_timeout: float = 20.0
    max_connections_per_viewer: int = 4
    poll_interval: float = 0.25
    part_ms: int = 200
    renditions: list[Rendition] = field(default_factory=_default_renditions)

    def rendition(self, name: str | None) -> Rendition:
        """The rendition called `name`, or the top one for an unknown or missing name."""
        for rendition in self.renditions:
            if rendition.name == name:
                return rendition
        return self.renditions[0]


@dataclass
class IngestConfig:
    enabled: bool = False
    host: str = ""  # empty: 0.0.0.0, or 127.0.0.1 in onion mode
    port: int = 1935
    app: str = "live"
    allow: list[str] = field(default_factory=list)
    transcode_preset: str = "veryfast"
    transcode_video_kbps: int = 2500
    transcode_audio_kbps: int = 128
    handshake_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_pending: int = 16
    max_pending_per_address: int = 2
    takeover_after: float = 3.0


@dataclass
class TorConfig:
    enabled: bool = False
    mode: str = "launch"
    command: str = "tor"
    control_host: str = "127.0.0.1"
    control_port: int = 9051
    control_socket: str = ""
    password: str = ""
    key_file: str = ""
    ephemeral: bool = False
    client_auth: bool = False
    virtual_port: int = 80
    clearnet: bool = False
    restart_attempts: int = 3
    launch_timeout: float = 60.0
    check_interval: float = 2.0
    reachable_timeout: float = 120.0  # seconds before `serve --onion` says why it is not up
    pow: bool = True  # proof-of-work defenses, where this tor has them
    pow_queue_rate: int = 50  # rendezvous requests per second the service takes from the queue
    pow_queue_burst: int = 250
    max_streams: int = 32  # open streams (connections) per circuit; more closes the circuit
    circuits: bool = True  # a service folder, so tor tells each connection's circuit
    circuit_port: int = 0  # the loopback port for tor's PROXY lines; 0: a free one
    metrics: bool = True  # launch: open tor's MetricsPort on loopback for the cockpit
    metrics_port: int = 0  # attach: the attached tor's MetricsPort on 127.0.0.1 (0: none)
    intro_dos_defense: bool = False  # rate limits at the intro points (can cost reachability)
    torrc: dict[str, str | int] = field(default_factory=dict)


@dataclass
class RelayConfig:
    """An edge: `origin` set means pull that server's stream instead of a local source."""
    origin: str = ""
    poll_interval: float = 0.25
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    retry_max: float = 30.0
    tor_socks: str = "127.0.0.1:9050"


@dataclass
class SizePrice:
    """What one droplet size costs and how much outbound transfer it brings per month."""
    usd_per_month: float
    usd_per_hour: float
    transfer_gib: float


def _default_sizes() -> dict[str, SizePrice]:
    return {
        "s-1vcpu-512mb-10gb": SizePrice(4.0, 0.00595, 500.0),
        "s-1vcpu-1gb": SizePrice(6.0, 0.00893, 1000.0),
        "s-1vcpu-2gb": SizePrice(12.0, 0.01786, 2000.0),
        "s-2vcpu-2gb": SizePrice(18.0, 0.02679, 3000.0),
        "s-2vcpu-4gb": SizePrice(24.0, 0.03571, 4000.0),
    }


@dataclass
class PriceTable:
    """DigitalOcean's published prices, kept in one place with the day they were checked."""
    checked: str = "2025-04-22"
    source: str = "https://docs.digitalocean.com/products/droplets/details/pricing/"
    # per-second billing (since 2026-01-01; at least 60 s or $0.01): when and where checked
    billing_checked: str = "2026-12-02"
    billing_source: str = "https://docs.digitalocean.com/products/billing/"
    hours_per_month: float = 672.0
    overage_usd_per_gib: float = 0.01
    sizes: dict[str, SizePrice] = field(default_factory=_default_sizes)


@dataclass
class CloudConfig:
    api_url: str = "https://api.digitalocean.com"
    token_file: str = ""
    region: str = "fra1"
    size: str = "cheapest"
    image: str = "newest-debian"
    ssh_keys: list[str] = field(default_factory=list)
    tag: str = "livestream"
    http_port: int = 80
    ingest_port: int = 1935
    ingest_args: str = "ingest --host {host} --port {port}"
    in_clear: bool = False
    ssh_user: str = "root"
    ssh_port: int = 22
    ssh_identity: str = ""
    remote_command: str = "/usr/local/bin/livestream"
    tunnel_port: int = 8936
    push_command: str = ""
    ready_timeout: float = 600.0
    poll_interval: float = 5.0
    api_timeout: float = 30.0
    api_retries: int = 5
    retry_seconds: float = 1.0
    onion: bool = True
    swap_mib: int = 1024
    prices: PriceTable = field(default_factory=PriceTable)


@dataclass
class ChatConfig:
    history: int = 5000
    shown: int = 100
    max_length: int = 500
    max_lines: int = 8
    name_max: int = 24
    min_interval: float = 1.0
    window_seconds: float = 30.0
    window_messages: int = 10
    stream_seconds: float = 900.0
    enter_seconds: float = 1.0
    first_stream_seconds: float = 10.0
    poll_seconds: int = 4
    max_streams: int = 5000
    max_streams_per_viewer: int = 3
    nonce_seconds: float = 3600.0
    max_used_nonces: int = 100000
    max_tracked_posters: int = 10000
    max_filters: int = 100
    filter_max_length: int = 200
    tripcode_cost: int = 16384
    closed: bool = False  # only the broadcaster may post
    slow_seconds: int = 0  # slow mode: one message per this many seconds per viewer
    established_minutes: int = 0  # an identity must be this old before it may post


@dataclass
class CaptchaConfig:
    enabled: bool = True
    fonts: list[str] = field(default_factory=list)
    length: int = 5
    width: int = 200
    height: int = 70
    expire_seconds: float = 600.0
    pool_size: int = 40
    generate_per_second: float = 10.0
    audio_per_minute: int = 20
    max_pending: int = 5000
    testing_answers_file: str = ""


@dataclass
class BroadcasterConfig:
    username: str = "broadcaster"
    password: str = ""
    name: str = "Broadcaster"
    failed_logins: int = 5
    failed_window: float = 60.0
    allow_clearnet: bool = True


@dataclass
class ViewersConfig:
    watching_seconds: float = 10.0
    present_seconds: float = 60.0
    max_present: int = 10000
    max_stored: int = 50000
    cache_size: int = 5000
    set_cookie: bool = True
    max_push: int = 5000
    max_push_per_viewer: int = 8


@dataclass
class BudgetsConfig:
    """Per client: a Tor circuit, an IPv4 address or an IPv6 /64 (app/web/budgets.py)."""
    window_seconds: float = 600.0
    identities: int = 30  # new viewer tokens handed out per window
    captchas: int = 10  # captchas drawn per window
    posts: int = 120  # chat posts per window (each token has its own flood limits too)
    video: int = 8  # open /stream.mp4 responses at once
    push: int = 16  # open chat frames and event streams at once
    watching: int = 6  # viewers listed as watching at once
    close_circuit_after: int = 60  # refusals in a window before tor closes the circuit
    max_clients: int = 20000


@dataclass
class StoreConfig:
    redis_url: str = ""  # empty: SQLite in state_dir, for one process
    allow_unprotected_redis: bool = False  # a Redis on another machine without password/TLS


@dataclass
class AccessConfig:
    invite_only: bool = False  # only viewers who opened an invite link (app/web/access.py)


@dataclass
class HooksConfig:
    """The streamer's bots and scripts: app/hooks."""

    events_socket: bool = True  # state/events.sock: every event as a JSON line
    control_socket: bool = True  # state/control.sock: the broadcaster's powers


@dataclass
class WebhooksConfig:
    """Every event POSTed to each URL (app/hooks/webhooks.py)."""

    urls: list[str] = field(default_factory=list)
    secret: str = ""  # HMAC-SHA256 key of the signature header (needed with urls)
    allow_clearnet: bool = False  # with [tor] enabled: receivers not on loopback or .onion
    tor_socks: str = "127.0.0.1:9050"  # for .onion receivers


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tor: TorConfig = field(default_factory=TorConfig)
    cloud: CloudConfig = field(default_factory=CloudConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    captcha: CaptchaConfig = field(default_factory=CaptchaConfig)
    broadcaster: BroadcasterConfig = field(default_factory=BroadcasterConfig)
    viewers: ViewersConfig = field(default_factory=ViewersConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    source: Path | None = None

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.server.state_dir)

    @property
    def stream_dir(self) -> Path:
        return self.resolve(self.stream.dir)

    def resolve(self, path: str) -> Path:
        """Relative paths in the config are relative to the file, not to the working dir."""
        base = self.source.parent if self.source else PROJECT_DIR
        return (base / path).resolve()


def load(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """Read the TOML file (or the project's default), apply overrides, validate."""
    source = Path(path) if path else DEFAULT_CONFIG
    try:
        data = toml.load(source)
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except (toml.TomlDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = value
    return from_dict(data, source)


def from_dict(data: dict, source: Path | None = None) -> Config:
    """Build and check a Config from parsed TOML; errors name the key and `source`."""
    where = str(source) if source else "<config>"
    sections = {}
    hints = typing.get_type_hints(Config)
    for name, values in data.items():
        if name == "source" or name not in hints:
            raise ConfigError(f"{where}: unknown section [{name}]; known: {_known(Config)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        sections[name] = _build(hints[name], values, name, where)
    config = Config(**sections, source=source)
    _check(config, where)
    return config


def _known(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.name != "source")


def _build(cls, values: dict, section: str, where: str):
    hints = typing.get_type_hints(cls)
    built = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key '{section}.{key}'; known keys in [{section}]: {_known(cls)}"
            )
        built[key] = _coerce(value, hints[key], f"{section}.{key}", where)
    return cls(**built)


def _build_nested(cls, values: dict, name: str, where: str):
    """A table inside a section (e.g. [cloud.prices]); fields without a default are required."""
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: '{name}' is missing {', '.join(missing)}")
    return _build(cls, values, name, where)


def _coerce(value, hint, name: str, where: str):
    """Accept a value when it fits the declared type; ints are fine where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, name, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: '{name}' = {value!r} has the wrong type; expected {hint}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{name}' must be a list, got {value!r}")
        return [_coerce(v, item, name, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{name}' must be a table, got {value!r}")
        _, item = typing.get_args(hint)
        return {k: _coerce(v, item, f"{name}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{name}' must be a table, got {value!r}")
        return _build_nested(hint, value, name, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    quoted = " (write it without quotes)" if hint in (int, float, bool) and isinstance(
        value, str) else ""
    raise ConfigError(
        f"{where}: '{name}' = {value!r} has the wrong type; expected {hint.__name__}{quoted}"
    )


def _check(config: Config, where: str) -> None:
    """Range checks that types alone cannot express."""
    problems = []
    if not 0 < config.server.port < 65536:
        problems.append("'server.port' must be between 1 and 65535")
    if config.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append("'server.log_level' must be one of debug, info, warning, error")
    if not 1 <= config.server.workers <= 64:
        problems.append("'server.workers' must be between 1 and 64")
    if config.store.redis_url and not config.store.redis_url.startswith(
            ("redis://", "rediss://", "unix://")):
        problems.append("'store.redis_url' must start with redis://, rediss:// or unix://")
    elif config.store.redis_url and not config.store.allow_unprotected_redis:
        problems += _check_redis_protection(config.store.redis_url)
    if config.stream.memory_segments < 2:
        problems.append("'stream.memory_segments' must be at least 2")
    if config.stream.part_ms != 0 and not 50 <= config.stream.part_ms <= 2000:
        problems.append("'stream.part_ms' must be 0 (whole segments) or 50-2000")
    if config.stream.offline_after <= 0:
        problems.append("'stream.offline_after' must be positive")
    if "/" in config.stream.playlist:
        problems.append("'stream.playlist' must be a file name inside 'stream.dir'")
    problems += _check_renditions(config.stream)
    if not 0 < config.ingest.port < 65536:
        problems.append("'ingest.port' must be between 1 and 65535")
    if config.ingest.max_pending < 1 or config.ingest.max_pending_per_address < 1:
        problems.append("'ingest.max_pending' and 'ingest.max_pending_per_address' must be "
                        "at least 1")
    if config.ingest.takeover_after < 0:
        problems.append("'ingest.takeover_after' must be 0 or more seconds")
    if not config.ingest.app or "/" in config.ingest.app:
        problems.append("'ingest.app' must be one path part such as \"live\"")
    for entry in config.ingest.allow:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"'ingest.allow' entry {entry!r} is not an IP address or network")
    if config.tor.mode not in ("launch", "attach"):
        problems.append("'tor.mode' must be \"launch\" (start our own tor) or \"attach\"")
    if not 0 < config.tor.control_port < 65536:
        problems.append("'tor.control_port' must be between 1 and 65535")
    if not 0 <= config.tor.metrics_port < 65536:
        problems.append("'tor.metrics_port' must be between 0 (none) and 65535")
    if not 0 <= config.tor.circuit_port < 65536:
        problems.append("'tor.circuit_port' must be between 0 (any free port) and 65535")
    if not 0 < config.tor.virtual_port < 65536:
        problems.append("'tor.virtual_port' must be between 1 and 65535")
    if config.tor.restart_attempts < 0 or config.tor.check_interval <= 0:
        problems.append("'tor.restart_attempts' must be >= 0 and 'tor.check_interval' > 0")
    if not 0 < config.cloud.http_port < 65536 or not 0 < config.cloud.ingest_port < 65536:
        problems.append("'cloud.http_port' and 'cloud.ingest_port' must be between 1 and 65535")
    if not 0 < config.cloud.ssh_port < 65536 or not 0 < config.cloud.tunnel_port < 65536:
        problems.append("'cloud.ssh_port' and 'cloud.tunnel_port' must be between 1 and 65535")
    problems += _check_community(config)
    problems += _check_relay(config)
    problems += [f"'budgets.{name}' must be positive" for name, value in
                 dataclasses.asdict(config.budgets).items() if value <= 0]
    problems += _check_webhooks(config.webhooks, config.tor.enabled)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _check_redis_protection(url: str) -> list[str]:
    """Redis holds the chat, the bans and the server secret: one on another machine must be
    reached with a password, and over TLS (rediss://) unless the link is private."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix" or (parts.hostname or "") in ("localhost",):
        return []
    try:
        if ipaddress.ip_address(parts.hostname or "").is_loopback:
            return []
    except ValueError:
        pass
    if parts.password and parts.scheme == "rediss":
        return []
    missing = " and ".join(
        what for what, absent in (("a password", not parts.password),
                                  ("TLS (rediss://)", parts.scheme != "rediss")) if absent)
    return [f"'store.redis_url' reaches Redis on another machine without {missing}: whoever "
            "can reach that port, or sits on the path, can read the chat and the server "
            "secret and ban anyone. Give the edge its own Redis user with a password "
            "(README: \"Edges on other machines\") over rediss:// or an SSH tunnel to "
            "127.0.0.1, or set store.allow_unprotected_redis = true on a link you trust"]


RENDITION_NAME = re.compile(r"[a-z][a-z0-9]{0,15}")


def _check_renditions(stream: StreamConfig) -> list[str]:
    """The first rendition is the source; every other one needs a size and bitrates."""
    if not stream.renditions:
        return ["'stream.renditions' needs at least one entry (the source quality)"]
    problems = []
    names = [r.name for r in stream.renditions]
    reserved = {Path(stream.playlist).stem, Path(MASTER_PLAYLIST).stem}
    for rendition in stream.renditions:
        where = f"'stream.renditions' entry \"{rendition.name}\""
        if not RENDITION_NAME.fullmatch(rendition.name):
            problems.append(f"{where}: a name is 1-16 lowercase letters or digits, starting "
                            "with a letter (it becomes file names and ?quality=NAME)")
        elif names.count(rendition.name) > 1:
            problems.append(f"{where}: the name is used twice")
        elif rendition is not stream.renditions[0] and rendition.name in reserved:
            problems.append(f"{where}: the name is taken by the playlist files; pick another")
    top, lower = stream.renditions[0], stream.renditions[1:]
    if top.height or top.video_kbps:
        problems.append(f"'stream.renditions' entry \"{top.name}\": the first entry is the "
                        "source quality; leave its height and video_kbps out (0)")
    for rendition in lower:
        if not (rendition.height >= 90 and rendition.height % 2 == 0
                and 50 <= rendition.video_kbps <= 100_000 and 16 <= rendition.audio_kbps <= 512):
            problems.append(f"'stream.renditions' entry \"{rendition.name}\": needs an even "
                            "height of at least 90, video_kbps 50-100000 and audio_kbps 16-512")
    heights = [r.height for r in lower]
    if heights != sorted(heights, reverse=True):
        problems.append("'stream.renditions': list the lower qualities from high to low")
    return problems


def _check_relay(config: Config) -> list[str]:
    relay = config.relay
    problems = []
    if relay.origin and not relay.origin.startswith(("http://", "https://")):
        problems.append("'relay.origin' must start with http:// or https:// "
                        "(e.g. http://203.0.113.5:8080 or http://xyz.onion)")
    if min(relay.poll_interval, relay.connect_timeout, relay.read_timeout,
           relay.retry_max) <= 0:
        problems.append("'relay.poll_interval', 'relay.connect_timeout', "
                        "'relay.read_timeout' and 'relay.retry_max' must be positive")
    return problems


def _check_community(config: Config) -> list[str]:
    """Every cap on an in-memory collection must be a positive number."""
    problems = []
    modes = ("slow_seconds", "established_minutes")  # chat modes: 0 is off
    for section in ("chat", "captcha", "viewers"):
        values = getattr(config, section)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if f.name in modes or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and value <= 0:
                problems.append(f"'{section}.{f.name}' must be positive")
    from app.community.modes import ModeError, Modes, checked

    try:
        checked(Modes(config.chat.closed, config.chat.slow_seconds,
                      config.chat.established_minutes))
    except ModeError as exc:
        problems.append(f"'chat': {exc}")
    if not 2 <= config.captcha.length <= 10:
        problems.append("'captcha.length' must be between 2 and 10")
    if config.chat.tripcode_cost & (config.chat.tripcode_cost - 1):
        problems.append("'chat.tripcode_cost' must be a power of two (e.g. 16384)")
    return problems


ENVIRONMENT = {
    "LIVESTREAM_HOST": "server.host",
    "LIVESTREAM_PORT": "server.port",
    "LIVESTREAM_STREAM_DIR": "stream.dir",
    "LIVESTREAM_STATE_DIR": "server.state_dir",
    "LIVESTREAM_TOR_PASSWORD": "tor.password",
    "LIVESTREAM_BROADCASTER_PASSWORD": "broadcaster.password",
    "LIVESTREAM_BROADCASTER_ALLOW_CLEARNET": "broadcaster.allow_clearnet",
    "LIVESTREAM_ORIGIN": "relay.origin",
    "LIVESTREAM_REDIS_URL": "store.redis_url",
}


def environment_overrides(environ: typing.Mapping[str, str] = os.environ) -> dict:
    """LIVESTREAM_* variables as dotted-key overrides (for containers and service units),
    converted from text to their key's type here, so that the config file itself gets no
    such leniency (`port = "8080"` there is a mistake, and is refused)."""
    return {key: _from_text(environ[var], key, var)
            for var, key in ENVIRONMENT.items() if environ.get(var)}


def _from_text(text: str, dotted: str, variable: str):
    section, name = dotted.split(".", 1)
    hint = typing.get_type_hints(typing.get_type_hints(Config)[section])[name]
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        return hint(text) if hint in (int, float) else text
    except ValueError:
        raise ConfigError(f"environment: {variable}={text!r} is not a {hint.__name__} "
                          f"(it sets '{dotted}')") from None


def _check_webhooks(webhooks: WebhooksConfig, tor: bool) -> list[str]:
    from app.hooks.webhooks import WebhookError, check_url

    problems = []
    if webhooks.urls and len(webhooks.secret) < 16:
        problems.append("'webhooks.secret' must be at least 16 characters when "
                        "'webhooks.urls' lists a URL (receivers check the signature with it)")
    for url in webhooks.urls:
        try:
            check_url(url, tor, webhooks.allow_clearnet)
        except WebhookError as exc:
            problems.append(f"'webhooks.urls': {exc}")
    return problems
