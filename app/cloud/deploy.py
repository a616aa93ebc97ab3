"""`livestream cloud`: rent a DigitalOcean droplet for the evening, stream, destroy it.

`up` creates one droplet tagged as ours with user-data that installs and starts the server
(see user_data.py), uploads the project to it once it is active (upload.py), waits
until it answers over HTTP and prints where to watch and where to push. `play` does `up`,
plays the party here with the droplet following it through SSH (remote_party.py), and
destroys the droplet however that ends. `down` destroys every droplet with our tag and
checks they are gone; `status` lists them with uptime and cost so far. API calls go through
digitalocean.py, SSH through tunnel.py.

The coupling to the rest of livestream is argv strings only: the droplet runs
`livestream serve` and `livestream ingest ...` ([cloud] ingest_args), and `play` runs
`livestream play ... --party` here and `livestream follow` there (or [cloud] push_command
through `ssh -L`; with in_clear, `livestream play FILE --to rtmp://IP/live/KEY`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import requests

from app.cloud import receiver, tunnel, user_data
from app.cloud.digitalocean import TOKEN_HELP, ApiError, DigitalOcean
from app.cloud.estimate import droplet_cost, price_of
from app.cloud.upload import UploadError, send_bundle
from app.config import DEFAULT_CONFIG, PROJECT_DIR, CloudConfig, Config
from app.onion.keys import KEY_TYPE, new_key
from app.runtime import processes
from app.runtime.ports import free_loopback_port

log = logging.getLogger(__name__)
TOKEN_ENV = "DIGITALOCEAN_TOKEN"
NEWEST_DEBIAN = "newest-debian"  # [cloud] image: the newest Debian the API offers
DEBIAN_SLUG = re.compile(r"^debian-(\d+)-x64$")
CLEANUP_LOOKS = 3  # listings searched for a droplet a failed create may have made


class CloudError(Exception):
    """A problem with the cloud deployment meant for a person to read and act on."""


@dataclass(frozen=True)
class Droplet:
    id: int
    name: str
    status: str
    ip: str | None
    created: datetime
    size: str
    region: str
    usd_per_hour: float | None

    @classmethod
    def from_api(cls, data: dict) -> Droplet:
        public = [n["ip_address"] for n in data.get("networks", {}).get("v4", [])
                  if n.get("type") == "public"]
        size = data.get("size") or {}
        return cls(
            id=int(data["id"]), name=data.get("name", ""), status=data.get("status", "?"),
            ip=public[0] if public else None,
            created=datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")),
            size=data.get("size_slug") or size.get("slug", "?"),
            region=(data.get("region") or {}).get("slug", "?"),
            usd_per_hour=size.get("price_hourly"),
        )

    def uptime_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.created).total_seconds())

    def cost_so_far(self, now: datetime) -> float | None:
        """Billed per second since 2026-01-01, at least 60 s or $0.01 (estimate.py)."""
        if self.usd_per_hour is None:
            return None
        return droplet_cost(self.uptime_seconds(now), self.usd_per_hour)


@dataclass(frozen=True)
class Deployment:
    droplet: Droplet
    stream_key: str
    watch_url: str
    ingest_url: str
    usd_per_hour: float
    broadcaster_password: str = dataclasses.field(default="", repr=False)
    onion_address: str | None = None
    host_alias: str = ""  # the droplet's line in our known_hosts (tunnel.py)


def read_token(api_key: str | None, token_file: Path | None,
               environ: os._Environ | dict = os.environ) -> str:
    """--api-key, then $DIGITALOCEAN_TOKEN, then the token file; the value is never shown."""
    if api_key:
        return api_key.strip()
    if environ.get(TOKEN_ENV, "").strip():
        return environ[TOKEN_ENV].strip()
    if token_file:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise CloudError(f"cannot read the token file {token_file}: {exc.strerror}. "
                             + TOKEN_HELP) from None
        if token_file.stat().st_mode & 0o077:
            log.warning("token file %s is readable by others; chmod 600 it", token_file)
        if token:
            return token
        raise CloudError(f"the token file {token_file} is empty. " + TOKEN_HELP)
    raise CloudError("no DigitalOcean API token. " + TOKEN_HELP)


def client_for(config: Config, api_key: str | None = None) -> DigitalOcean:
    settings = config.cloud
    token_file = config.resolve(settings.token_file) if settings.token_file else None
    return DigitalOcean(read_token(api_key, token_file), settings.api_url,
                        timeout=settings.api_timeout, retries=settings.api_retries,
                        retry_seconds=settings.retry_seconds)


def with_options(settings: CloudConfig, **options) -> CloudConfig:
    """The [cloud] settings with command-line options (those not None) on top."""
    return dataclasses.replace(settings, **{k: v for k, v in options.items() if v is not None})


def _print(message: str) -> None:
    print(message, flush=True)


class Cloud:
    def __init__(self, api: DigitalOcean, config: Config, out: Callable[[str], None] = _print,
                 sleep: Callable[[float], None] = time.sleep, project_dir: Path = PROJECT_DIR):
        self.api = api
        self.project_dir = project_dir
        self.config = config
        self.settings = config.cloud
        self.out = out
        self.sleep = sleep

    # ---- up ---------------------------------------------------------------------------

    def up(self, allow_another: bool = False) -> Deployment:
        s = self.settings
        existing = [Droplet.from_api(d) for d in self.api.droplets(s.tag)]
        if existing and not allow_another:
            listing = "; ".join(f"{d.name} (id {d.id}, {d.ip or 'no address yet'})"
                                for d in existing)
            raise CloudError(
                f"a droplet tagged '{s.tag}' already exists: {listing}. Use it, destroy it with "
                "`livestream cloud down`, or pass --another to create one more.")
        size, usd_per_hour = self.choose_size()
        image = self.choose_image()
        self.check_ssh_keys()
        stream_key = secrets.token_urlsafe(18)
        deploy_key = secrets.token_bytes(receiver.KEY_BYTES)  # only the user-data has it
        # the way into /broadcaster: a password made here and shown once, and an onion key
        # made here, so the address is known before the droplet exists
        password = secrets.token_urlsafe(15)
        onion = new_key() if s.onion else None
        try:
            host_key = tunnel.new_host_key()
        except tunnel.TunnelError as exc:
            raise CloudError(str(exc)) from None
        user_data, bundle = self.prepare(stream_key, deploy_key, password=password,
                                         onion_key=onion and f"{KEY_TYPE}:{onion.blob}",
                                         host_key=host_key)
        name = "livestream-" + time.strftime("%Y%m%d-%H%M%S")
        self.out(f"creating droplet {name}: {size} in {s.region}, {image}, "
                 f"${usd_per_hour:g}/hour billed per second")
        try:
            created = self.api.create_droplet({
                "name": name, "region": s.region, "size": size, "image": image,
                "ssh_keys": [int(k) if k.isdigit() else k for k in s.ssh_keys],
                "tags": [s.tag], "user_data": user_data, "ipv6": False, "monitoring": False,
            })
        except ApiError as exc:
            if exc.maybe_done:  # the droplet may exist anyway: it must not cost money
                try:
                    self.destroy_leftovers(name)
                except (ApiError, CloudError) as cleanup:
                    self.out(f"could not check for a droplet named {name} ({cleanup}); look "
                             "at https://cloud.digitalocean.com/droplets or run `livestream "
                             "cloud down`")
            raise
        droplet_id = int(created["id"])
        tunnel.pin(self.known_hosts, name, host_key)
        try:
            droplet = self.wait_until_active(droplet_id)
            self.upload(droplet.ip, deploy_key, bundle)
            self.wait_until_serving(droplet.ip)
        except BaseException:
            self.out(f"could not finish starting droplet {droplet_id}; destroying it so it "
                     "does not cost money")
            self.destroy([droplet_id])
            raise
        deployment = Deployment(
            droplet=droplet, stream_key=stream_key,
            watch_url=self.http_url(droplet.ip),
            ingest_url=self.rtmp_url(droplet.ip, stream_key),
            usd_per_hour=usd_per_hour, broadcaster_password=password,
            onion_address=onion.address if onion else None, host_alias=name,
        )
        self.out(f"ready: watch at {deployment.watch_url}")
        self.print_ingest_way(deployment)
        self.print_private_way(deployment)
        self.out(f"costs ${usd_per_hour:g} per hour, billed per second (at least 60 s or "
                 "$0.01); destroy it with `livestream cloud down`")
        return deployment

    def print_ingest_way(self, deployment: Deployment) -> None:
        """Where OBS pushes: through SSH to the droplet's loopback ingest, or in clear."""
        key, port = deployment.stream_key, self.settings.ingest_port
        if self.settings.in_clear:
            self.out(f"push your stream to {deployment.ingest_url} (in clear: anyone on the "
                     "way sees the stream key and the video)")
            self.out(f"  (OBS: server {deployment.ingest_url.rsplit('/', 1)[0]}, "
                     f"stream key {key})")
            return
        if not self.settings.ssh_keys:
            self.out("no SSH key ([cloud] ssh_keys): the droplet's ingest listens only on its "
                     "loopback, so nothing can push to it; add a key, or use --in-clear")
            return
        local = f"127.0.0.1:{port}"
        self.out("push your stream through SSH (the stream key and the video never cross the "
                 "internet in clear); keep this open:")
        self.out("  " + self.tunnel(deployment).shown(f"-L {local}:127.0.0.1:{port}"))
        self.out(f"  then push to rtmp://{local}/{self.config.ingest.app}/{key} (OBS: server "
                 f"rtmp://{local}/{self.config.ingest.app}, stream key {key})")

    def tunnel(self, deployment: Deployment) -> tunnel.Tunnel:
        s = self.settings
        identity = str(Path(s.ssh_identity).expanduser()) if s.ssh_identity else ""
        return tunnel.Tunnel(host=deployment.droplet.ip or "", alias=deployment.host_alias,
                             known_hosts=self.known_hosts, user=s.ssh_user, port=s.ssh_port,
                             identity=identity)

    @property
    def known_hosts(self) -> Path:
        return self.config.state_dir / "cloud" / "known_hosts"

    def print_private_way(self, deployment: Deployment) -> None:
        """How to reach /broadcaster without plain HTTP; the password is shown this once."""
        port = self.settings.http_port
        self.out("broadcaster page (the public address refuses it, so the password never "
                 "crosses the internet in clear):")
        if deployment.onion_address:
            self.out(f"  through Tor: http://{deployment.onion_address}/broadcaster "
                     "(Tor Browser; published a minute or two after the server starts)")
        if self.settings.ssh_keys:
            self.out("  through SSH: " + self.tunnel(deployment).shown(
                f"-L 8080:127.0.0.1:{port}") + " , then http://127.0.0.1:8080/broadcaster")
        if not deployment.onion_address and not self.settings.ssh_keys:
            self.out("  no private way in: set [cloud] onion = true or add an SSH key "
                     "([cloud] ssh_keys) next time")
        self.out(f"  user {self.config.broadcaster.username}, password "
                 f"{deployment.broadcaster_password} (shown only now; not stored here)")

    def choose_image(self) -> str:
        """The configured image slug, checked against the API, or the newest Debian it
        offers: a retired or mistyped slug fails here, before anything is created."""
        s = self.settings
        offered = [i for i in self.api.distribution_images()
                   if i.get("slug") and i.get("status", "available") == "available"
                   and s.region in i.get("regions", [s.region])]
        debian = sorted((int(m.group(1)), i["slug"]) for i in offered
                        if (m := DEBIAN_SLUG.match(i["slug"])))
        if s.image in ("", NEWEST_DEBIAN):
            if not debian:
                raise CloudError(f"the API offers no Debian image in region '{s.region}'; "
                                 "set [cloud] image (or --image) to a Debian or Ubuntu slug.")
            return debian[-1][1]
        if any(i["slug"] == s.image for i in offered):
            return s.image
        found = self.api.image(s.image)  # an application or private image, by slug or id
        if found and s.region in found.get("regions", [s.region]):
            return s.image
        raise CloudError(
            f"DigitalOcean has no image '{s.image}' in region '{s.region}'. Debian images "
            f"offered: {', '.join(slug for _, slug in reversed(debian)) or 'none'}. Set "
            f"[cloud] image (or --image) to one of them, or to \"{NEWEST_DEBIAN}\".")

    def check_ssh_keys(self) -> None:
        """Every configured SSH key must be on the account (by id or fingerprint)."""
        if not self.settings.ssh_keys:
            return
        known = set()
        for key in self.api.ssh_keys():
            known |= {str(key.get("id")), str(key.get("fingerprint"))}
        unknown = [k for k in self.settings.ssh_keys if k not in known]
        if unknown:
            raise CloudError(
                f"SSH key(s) {', '.join(unknown)} are not on your DigitalOcean account; add "
                "them at https://cloud.digitalocean.com/account/security or use the id or "
                "fingerprint `doctl compute ssh-key list` shows ([cloud] ssh_keys, --ssh-key).")

    def destroy_leftovers(self, name: str) -> None:
        """After a create that failed without a clear refusal: find a droplet with our tag
        and this name (looking a few times, as a new droplet may be listed late) and destroy
        it, so the error we report does not leave a droplet running."""
        for look in range(CLEANUP_LOOKS):
            found = [int(d["id"]) for d in self.api.droplets(self.settings.tag)
                     if d.get("name") == name]
            if found:
                self.out(f"the create failed but made droplet(s) {', '.join(map(str, found))}"
                         "; destroying them so they do not cost money")
                self.destroy(found)
                return
            if look + 1 < CLEANUP_LOOKS:
                self.sleep(self.settings.poll_interval)
        self.out(f"the create failed; no droplet named {name} was made")

    def choose_size(self) -> tuple[str, float]:
        """The configured size, or the cheapest one offered in the region, checked against
        the API's list so a typo or an unavailable size fails before anything is created."""
        s = self.settings
        sizes = [z for z in self.api.sizes() if z.get("available", True)]
        in_region = [z for z in sizes if s.region in z.get("regions", [])]
        if s.size == "cheapest":
            if not in_region:
                regions = sorted({r for z in sizes for r in z.get("regions", [])})
                raise CloudError(f"no droplet size is offered in region '{s.region}'; "
                                 f"regions: {', '.join(regions) or 'none'}. Use --region.")
            best = min(in_region, key=lambda z: (z["price_hourly"], z["slug"]))
            return best["slug"], float(best["price_hourly"])
        for z in sizes:
            if z["slug"] == s.size:
                if s.region not in z.get("regions", []):
                    raise CloudError(
                        f"size '{s.size}' is not offered in region '{s.region}'; it is in: "
                        f"{', '.join(sorted(z.get('regions', []))) or 'no region'}. "
                        "Use --region or --size.")
                return s.size, float(z["price_hourly"])
        raise CloudError(f"DigitalOcean has no droplet size '{s.size}'; cheapest in "
                         f"{s.region}: "
                         + ", ".join(z["slug"] for z in sorted(
                             in_region, key=lambda z: z["price_hourly"])[:5]))

    def prepare(self, stream_key: str, deploy_key: bytes, password: str = "",
                onion_key: str | None = None,
                host_key: tunnel.HostKey | None = None) -> tuple[str, bytes]:
        """(user-data, bundle): the small fixed first stage and the project it will receive.
        Both are checked here, before a droplet exists."""
        s = self.settings
        config_file = self.config.source or DEFAULT_CONFIG
        bundle = user_data.bundle(self.project_dir, config_file)
        if len(bundle) > receiver.MAX_BUNDLE_BYTES:
            raise CloudError(f"the project bundle is {len(bundle)} bytes, over the "
                             f"{receiver.MAX_BUNDLE_BYTES}-byte cap; remove large files "
                             "from app/, templates/ or static/ (media does not belong there).")
        try:
            document = user_data.render(user_data.DropletSettings(
                stream_key=stream_key, deploy_key=deploy_key.hex(), http_port=s.http_port,
                ingest_port=s.ingest_port, ingest_args=s.ingest_args, in_clear=s.in_clear,
                host_key=host_key,
                broadcaster_password=password, onion_key=onion_key or "", onion=s.onion,
                swap_mib=s.swap_mib,
                # outlive our own upload attempts, which start once the droplet is active
                receive_timeout=s.ready_timeout + 300))
        except ValueError as exc:
            raise CloudError(str(exc)) from None
        return document, bundle

    def upload(self, ip: str, deploy_key: bytes, bundle: bytes) -> None:
        """Stage 2: the sealed project to the droplet's one-shot receiver (bounded retries)."""
        try:
            send_bundle(self.http_url(ip), deploy_key, bundle,
                        deadline_seconds=self.settings.ready_timeout,
                        interval=self.settings.poll_interval, out=self.out, sleep=self.sleep,
                        request_timeout=self.settings.api_timeout)
        except UploadError as exc:
            raise CloudError(str(exc)) from None

    def wait_until_active(self, droplet_id: int) -> Droplet:
        """Poll the droplet until it is active with a public IPv4 address (bounded)."""
        started = time.monotonic()
        while True:
            droplet = Droplet.from_api(self.api.droplet(droplet_id))
            elapsed = time.monotonic() - started
            if droplet.status == "active" and droplet.ip:
                self.out(f"droplet {droplet_id} is active at {droplet.ip} ({elapsed:.0f} s)")
                return droplet
            if elapsed > self.settings.ready_timeout:
                raise CloudError(f"droplet {droplet_id} is still '{droplet.status}' after "
                                 f"{elapsed:.0f} s; giving up ([cloud] ready_timeout)")
            self.out(f"  droplet is {droplet.status} ({elapsed:.0f} s)")
            self.sleep(self.settings.poll_interval)

    def wait_until_serving(self, ip: str) -> None:
        """Poll http://IP/ until the server answers 200: cloud-init is installing it."""
        url = self.http_url(ip)
        self.out(f"waiting for {url} to answer (installing; usually about two minutes)")
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            try:
                answer = requests.get(url, timeout=min(5.0, self.settings.ready_timeout))
                if answer.status_code == 200:
                    self.out(f"  the server answers ({elapsed:.0f} s)")
                    return
                state = f"HTTP {answer.status_code}"
            except requests.RequestException as exc:
                state = "not answering yet" if isinstance(
                    exc, (requests.ConnectionError, requests.Timeout)) else type(exc).__name__
            if elapsed > self.settings.ready_timeout:
                raise CloudError(f"{url} did not answer within {elapsed:.0f} s ({state}); "
                                 "giving up ([cloud] ready_timeout). On the droplet, "
                                 "/var/log/cloud-init-output.log says why.")
            self.out(f"  {state} ({elapsed:.0f} s)")
            self.sleep(self.settings.poll_interval)

    def http_url(self, ip: str) -> str:
        port = self.settings.http_port
        return f"http://{ip}/" if port == 80 else f"http://{ip}:{port}/"

    def rtmp_url(self, ip: str, key: str) -> str:
        port = self.settings.ingest_port
        host = ip if port == 1935 else f"{ip}:{port}"
        return f"rtmp://{host}/{self.config.ingest.app}/{key}"  # the droplet runs this config

    # ---- down / status ------------------------------------------------------------------

    def down(self) -> int:
        """Destroy every droplet with our tag and check they are gone; returns how many."""
        droplets = [Droplet.from_api(d) for d in self.api.droplets(self.settings.tag)]
        if not droplets:
            self.out(f"no droplets tagged '{self.settings.tag}'")
            return 0
        self.destroy([d.id for d in droplets])
        return len(droplets)

    def destroy(self, ids: list[int]) -> None:
        """Delete each droplet, again while it is locked by an action, and say "destroyed"
        only once the API no longer lists any of them (all bounded by one deadline)."""
        to_delete = list(ids)
        for droplet_id in ids:
            self.out(f"destroying droplet {droplet_id}")
        started = time.monotonic()
        while True:
            for droplet_id in list(to_delete):
                try:
                    self.api.delete_droplet(droplet_id)
                    to_delete.remove(droplet_id)
                except ApiError as exc:
                    if not exc.locked:
                        raise
                    self.out(f"  droplet {droplet_id} is locked by an action; trying again")
            left = [d["id"] for d in self.api.droplets(self.settings.tag) if d["id"] in ids]
            if not left and not to_delete:
                self.out(f"destroyed {len(ids)} droplet(s); billing has stopped")
                return
            if time.monotonic() - started > min(self.settings.ready_timeout, 300):
                raise CloudError(
                    f"droplet(s) {', '.join(map(str, sorted(set(left + to_delete))))} are "
                    "still there after deletion (locked or still listed); run `livestream "
                    "cloud down` again in a minute or check "
                    "https://cloud.digitalocean.com/droplets")
            self.sleep(self.settings.poll_interval)

    def status(self, now: datetime | None = None) -> list[Droplet]:
        now = now or datetime.now(timezone.utc)
        droplets = [Droplet.from_api(d) for d in self.api.droplets(self.settings.tag)]
        if not droplets:
            self.out(f"no droplets tagged '{self.settings.tag}'")
            return droplets
        self.out(f"{'ID':<12}{'NAME':<28}{'STATUS':<8}{'IP':<17}{'SIZE':<20}"
                 f"{'UPTIME':<11}COST SO FAR")
        for d in droplets:
            if d.usd_per_hour is None and d.size in self.settings.prices.sizes:
                # the API left the price out: fall back on the table
                d = dataclasses.replace(
                    d, usd_per_hour=price_of(self.settings.prices, d.size).usd_per_hour)
            cost = d.cost_so_far(now)
            self.out(f"{d.id:<12}{d.name:<28}{d.status:<8}{d.ip or '-':<17}{d.size:<20}"
                     f"{_duration(d.uptime_seconds(now)):<11}"
                     f"{'unknown' if cost is None else f'${cost:.4f}'}")
        return droplets

    # ---- play ---------------------------------------------------------------------------

    def play(self, play_args: list[str], allow_another: bool = False) -> int:
        """Check what `play` will do, up, stream, and destroy the droplet when it ends, on
        Ctrl-C or on error. `play_args`: `livestream play`'s arguments (files, options,
        `--` groups) without --to. The stream goes through SSH (the party plays here and
        the droplet follows it; or push_command through `ssh -L`), or in clear if asked."""
        self.check_play(play_args)
        if not self.settings.in_clear and not self.settings.ssh_keys:
            raise CloudError("`cloud play` sends the stream through SSH and needs an SSH key "
                             "on the droplet: set [cloud] ssh_keys (or --ssh-key) to a key of "
                             "your DigitalOcean account; or pass --in-clear to push plain RTMP "
                             "(the stream key and the video readable on the way). Nothing "
                             "was created.")
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            deployment = self.up(allow_another=allow_another)
            try:
                self.out(f"streaming {play_args[0]} to the droplet")
                code = self.stream(deployment, play_args)
                if code != 0:
                    self.out(f"the stream ended with status {code}")
                return code
            finally:
                self.out("the stream has ended; destroying the droplet")
                self.destroy([deployment.droplet.id])
        finally:
            signal.signal(signal.SIGTERM, previous)

    def check_play(self, play_args: list[str]) -> None:
        """Everything `play` checks (the files, their audio and subtitle tracks, --start,
        --size, a queue's every item) runs here first, with `play --dry-run`: a typo must not
        cost a droplet."""
        argv = self._play_command(play_args, "rtmp://127.0.0.1/live/check", dry_run=True)
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False, cwd=PROJECT_DIR, timeout=300)
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip() or "(no message)")
            raise CloudError(f"{detail}\n(checked before renting: nothing was created)")

    def stream(self, deployment: Deployment, play_args: list[str]) -> int:
        if self.settings.in_clear:
            return run_until_done(self.push_argv(play_args, deployment.ingest_url))
        way = self.tunnel(deployment)
        if self.settings.push_command.strip():
            return push_through(way, self.settings.ingest_port, deployment.stream_key,
                                self.config.ingest.app,
                                lambda url: self.push_argv(play_args, url), self.out)
        from app.cloud.remote_party import RemoteParty, RemotePartyError

        party = RemoteParty(self.config, way, lambda folder: self.party_command(play_args, folder),
                            deployment.watch_url, self.out)
        try:
            return party.run()
        except RemotePartyError as exc:
            raise CloudError(str(exc)) from None

    def party_command(self, play_args: list[str], stream_dir: Path) -> list[str]:
        """`livestream play ... --party` into `stream_dir` on this machine, same config."""
        argv = self._play_command(play_args, "")
        at = argv.index("--to")
        return argv[:at] + ["--party", "--stream-dir", str(stream_dir)] + argv[at + 2:]

    def push_argv(self, play_args: list[str], url: str) -> list[str]:
        if self.settings.push_command.strip():
            return [part.replace("{file}", play_args[0]).replace("{url}", url)
                    for part in shlex.split(self.settings.push_command)] + play_args[1:]
        return self._play_command(play_args, url)

    def _play_command(self, play_args: list[str], url: str, dry_run: bool = False) -> list[str]:
        config_file = str(self.config.source or DEFAULT_CONFIG)
        sources, groups = play_args, []
        if "--" in play_args:  # --to and --dry-run belong before the later groups
            cut = play_args.index("--")
            sources, groups = play_args[:cut], play_args[cut:]
        return [sys.executable, "-m", "app.cli", "--config", config_file, "play", *sources,
                "--to", url, *(["--dry-run"] if dry_run else []), *groups]


def run(action: str, config: Config, api_key: str | None = None, options: dict | None = None,
        another: bool = False, play_args: list[str] | None = None) -> int:
    """One `livestream cloud ACTION`: errors become a message on stderr and an exit status."""
    config = dataclasses.replace(config, cloud=with_options(config.cloud, **(options or {})))
    try:
        cloud = Cloud(client_for(config, api_key), config)
        if action == "up":
            cloud.up(allow_another=another)
        elif action == "down":
            cloud.down()
        elif action == "status":
            cloud.status()
        elif action == "play":
            return cloud.play(play_args or [], allow_another=another)
        else:
            raise CloudError(f"unknown action {action!r}")
    except (CloudError, ApiError) as exc:
        print(f"livestream cloud {action}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"livestream cloud {action}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


def push_through(way: tunnel.Tunnel, ingest_port: int, key: str, app: str,
                 push_argv: Callable[[str], list[str]], out: Callable[[str], None]) -> int:
    """push_command to the droplet's loopback ingest through `ssh -L`, closed afterwards."""
    local = free_loopback_port()
    try:
        forward = subprocess.Popen(way.argv("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:"
                                            f"{ingest_port}"), stdin=subprocess.DEVNULL)
    except (OSError, tunnel.TunnelError) as exc:
        raise CloudError(f"cannot start ssh: {exc}") from None
    try:
        deadline = time.monotonic() + 60
        while not tunnel.listening(local):
            if forward.poll() is not None:
                raise CloudError(f"ssh to the droplet ended (status {forward.returncode}); "
                                 "see its message above")
            if time.monotonic() > deadline:
                raise CloudError("the SSH tunnel did not open within 60 s")
            time.sleep(0.1)
        out(f"the stream goes through SSH (127.0.0.1:{local} here -> the droplet's ingest)")
        return run_until_done(push_argv(f"rtmp://127.0.0.1:{local}/{app}/{key}"))
    finally:
        processes.stop(forward, 10)


def run_until_done(argv: list[str]) -> int:
    """Run the push and wait; on Ctrl-C or any error stop it before passing the error on."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=PROJECT_DIR)
    except OSError as exc:
        raise CloudError(f"cannot run the push command {argv[0]}: {exc.strerror}") from None
    try:
        return process.wait()
    except BaseException:
        processes.stop(process, 10)
        raise


def _terminate(signum, frame):
    """SIGTERM takes the same path as Ctrl-C, so the droplet is destroyed either way."""
    raise KeyboardInterrupt(f"signal {signum}")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


__all__ = ["ApiError", "Cloud", "CloudError", "Deployment", "Droplet", "client_for",
           "read_token", "with_options"]
