"""One-shot receiver of the project bundle on a fresh droplet (stage 1 of `cloud up`).

Why: DigitalOcean caps user-data at 64 KiB and the project outgrew it. So the user-data
carries only this file, a fresh per-droplet deploy key and the install script; the droplet
runs this receiver on its public HTTP port, `livestream cloud up` uploads the bundle to it,
and the receiver unpacks it and exits so the real server can take the port.

It runs before pip, as root, on the distribution's python3: standard library only, and
usable both as a script on the droplet and as `app.cloud.receiver` (the sealing side).

Why this construction. The bundle holds the user's config.toml and travels over plain
HTTP, so it is encrypted and authenticated with a 32-byte key that only the user-data
carries (user-data reaches DigitalOcean over HTTPS). The standard library has no cipher,
so this is encrypt-then-MAC from two primitives it does have:
- two independent keys derived from the deploy key with HMAC-SHA256 and distinct labels
  (domain separation: a key is never used for two purposes);
- encryption: XOR with a SHAKE-256 keystream of (encryption key || random 16-byte nonce).
  SHAKE-256 is an extendable-output function; with a secret key and a fresh nonce its
  output is indistinguishable from random, which is what a stream cipher needs;
- integrity: HMAC-SHA256 over everything before the tag (magic, challenge, nonce,
  ciphertext), checked with hmac.compare_digest before anything is decrypted or written.
Replay: the receiver picks a random challenge when it starts and serves it at
GET /challenge; the sealed upload must carry it under the MAC, so an upload recorded
earlier (against another run of the receiver) is refused, and a nonce is accepted once.
The answer to a good upload is a receipt (HMAC of the upload's tag under a third derived
key), so `cloud up` knows the droplet itself, not something in between, got the bundle.
Size: an upload over --max-bytes is refused from its Content-Length, before reading it.
Extraction: regular files and folders only, relative names without `..`, a cap on the
unpacked size, tarfile's "data" filter where this Python has it, into a staging folder
that is renamed into place only when everything is out. No valid upload within
--timeout seconds: log why and exit 2, so a droplet never keeps the listener open.

Envelope: MAGIC (4) | challenge (16) | nonce (16) | ciphertext | HMAC-SHA256 tag (32).
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

log = logging.getLogger("cloud-receiver")

MAGIC = b"LSB1"
KEY_BYTES = 32
CHALLENGE_BYTES = 16
NONCE_BYTES = 16
TAG_BYTES = 32
HEADER_BYTES = len(MAGIC) + CHALLENGE_BYTES + NONCE_BYTES
MAX_BUNDLE_BYTES = 32 * 1024 * 1024  # compressed; the project is well under 1 MiB
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 20_000
CONNECTION_SECONDS = 20  # one slow or silent client cannot hold the port longer than this
EXIT_TIMED_OUT = 2


class Rejected(Exception):
    """An upload refused: the HTTP status to answer and why (safe to log and to send)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def derive(key: bytes, purpose: bytes) -> bytes:
    """A sub-key for one purpose only."""
    return hmac.new(key, b"livestream bundle\0" + purpose, hashlib.sha256).digest()


def _xor_keystream(key: bytes, nonce: bytes, data: bytes) -> bytes:
    stream = hashlib.shake_256(derive(key, b"encrypt") + nonce).digest(len(data)) if data else b""
    mixed = int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")
    return mixed.to_bytes(len(data), "little")


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(derive(key, b"authenticate"), body, hashlib.sha256).digest()


def seal(key: bytes, challenge: bytes, bundle: bytes, nonce: bytes | None = None) -> bytes:
    """The upload `cloud up` sends: the bundle encrypted and authenticated for one receiver run."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(key) != KEY_BYTES or len(challenge) != CHALLENGE_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError("key, challenge or nonce has the wrong length")
    body = MAGIC + challenge + nonce + _xor_keystream(key, nonce, bundle)
    return body + _tag(key, body)


def open_sealed(key: bytes, challenge: bytes, envelope: bytes) -> tuple[bytes, bytes]:
    """(nonce, bundle) of an authentic upload for this challenge; Rejected otherwise."""
    if len(envelope) < HEADER_BYTES + TAG_BYTES or not envelope.startswith(MAGIC):
        raise Rejected(400, "not a sealed bundle")
    body, tag = envelope[:-TAG_BYTES], envelope[-TAG_BYTES:]
    if not hmac.compare_digest(_tag(key, body), tag):
        raise Rejected(403, "authentication failed (tampered, or sealed with another key)")
    if not hmac.compare_digest(body[len(MAGIC):len(MAGIC) + CHALLENGE_BYTES], challenge):
        raise Rejected(409, "sealed for another challenge (a replay, or the receiver "
                            "restarted): fetch /challenge again")
    nonce = body[len(MAGIC) + CHALLENGE_BYTES:HEADER_BYTES]
    return nonce, _xor_keystream(key, nonce, body[HEADER_BYTES:])


def receipt(key: bytes, envelope: bytes) -> bytes:
    """Proof that the holder of the key authenticated exactly this upload."""
    return hmac.new(derive(key, b"receipt"), envelope[-TAG_BYTES:], hashlib.sha256).digest()


def check_members(members: list[tarfile.TarInfo]) -> None:
    """Only plain files and folders with safe relative names, within the caps."""
    if len(members) > MAX_MEMBERS:
        raise Rejected(422, f"the bundle has more than {MAX_MEMBERS} entries")
    total = 0
    for member in members:
        path = PurePosixPath(member.name)
        if (not member.name or path.is_absolute() or ".." in path.parts or "\\" in member.name
                or member.name.startswith("/")):
            raise Rejected(422, f"unsafe name in the bundle: {member.name!r}")
        if not (member.isreg() or member.isdir()):
            raise Rejected(422, f"not a plain file or folder in the bundle: {member.name!r}")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise Rejected(422, f"the bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
        # no setuid/setgid/sticky bits, nobody but the owner writes; owners come from us
        member.mode = 0o755 if member.isdir() or member.mode & 0o100 else 0o644
        member.uid = member.gid = 0
        member.uname = member.gname = "root"


def can_unpack_into(dest: Path) -> bool:
    return not dest.exists() or (dest.is_dir() and not any(dest.iterdir()))


def unpack(bundle: bytes, dest: Path) -> int:
    """Extract the gzipped tar into dest (absent or empty) all at once; returns the file count."""
    if not can_unpack_into(dest):
        raise Rejected(500, f"{dest} already holds files; refusing to overwrite them")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".receiving-", dir=dest.parent))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
                members = tar.getmembers()
                check_members(members)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(staging, members, filter="data")
                else:  # Python without extraction filters: check_members did the same checks
                    tar.extractall(staging, members)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise Rejected(422, f"the bundle cannot be unpacked: {exc}") from None
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sum(1 for m in members if m.isreg())


class Receiver:
    """The state of one run: the key, the challenge, the nonces seen, and whether it is done."""

    def __init__(self, key: bytes, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES):
        self.key = key
        self.dest = dest
        self.max_envelope = max_bytes + HEADER_BYTES + TAG_BYTES
        self.challenge = os.urandom(CHALLENGE_BYTES)
        self.seen_nonces: set[bytes] = set()
        self.done = False
        self._one_at_a_time = threading.Lock()  # connections are served in threads

    def accept(self, envelope: bytes) -> bytes:
        """Check, decrypt and unpack one upload; the receipt to answer with, or Rejected."""
        with self._one_at_a_time:
            return self._accept(envelope)

    def _accept(self, envelope: bytes) -> bytes:
        nonce, bundle = open_sealed(self.key, self.challenge, envelope)
        if nonce in self.seen_nonces:
            raise Rejected(409, "this upload was already received once (a replay)")
        self.seen_nonces.add(nonce)
        files = unpack(bundle, self.dest)
        log.info("received the bundle (%d bytes, %d files) into %s", len(bundle), files,
                 self.dest)
        self.done = True
        return receipt(self.key, envelope)


def handler_for(receiver: Receiver,
                connection_seconds: float = CONNECTION_SECONDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = connection_seconds  # per read: a silent client
        server_version = "livestream-receiver"
        sys_version = ""

        def setup(self) -> None:
            """A total deadline per connection, not only per read: a client that drips a byte
            just inside every read timeout would otherwise hold the one-shot port for ever
            (or, with others, fill the connections it serves) and make the deploy time out."""
            super().setup()
            self._watchdog = threading.Timer(connection_seconds, self._cut)
            self._watchdog.daemon = True
            self._watchdog.start()

        def _cut(self) -> None:
            log.warning("closed a connection from %s after %.0f s (the most one connection "
                        "may take)", self.client_address[0], connection_seconds)
            try:
                self.connection.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
            except OSError:
                pass  # already closed

        def finish(self) -> None:
            self._watchdog.cancel()
            try:
                super().finish()
            except OSError:
                pass  # the watchdog cut the connection under the writer

        def do_GET(self) -> None:
            if self.path == "/challenge":
                self.answer(200, receiver.challenge.hex())
            else:
                self.answer(404, "not found")

        def do_POST(self) -> None:
            self.close_connection = True
            if self.path != "/bundle":
                self.answer(404, "not found")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.refuse(Rejected(411, "a Content-Length is required"))
                return
            if length < 0 or length > receiver.max_envelope:
                self.refuse(Rejected(413, f"an upload may be at most {receiver.max_envelope} "
                                          "bytes"))
                return
            envelope = self.rfile.read(length)
            if len(envelope) != length:
                self.refuse(Rejected(400, "the upload ended early"))
                return
            try:
                proof = receiver.accept(envelope)
            except Rejected as rejected:
                self.refuse(rejected)
                return
            self.answer(200, proof.hex())

        def refuse(self, rejected: Rejected) -> None:
            log.warning("refused an upload from %s: %s", self.client_address[0], rejected.reason)
            self.answer(rejected.status, rejected.reason)

        def answer(self, status: int, text: str) -> None:
            data = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:
            log.debug("%s %s", self.client_address[0], format % args)

    return Handler


MAX_CONNECTIONS = 64
MAX_PER_ADDRESS = 4


class ReceivingServer(ThreadingHTTPServer):
    """Several connections at once, each in its own thread, at most MAX_PER_ADDRESS from one
    address and MAX_CONNECTIONS in all: a few idle connections (each may last up to its
    deadline) held the one-at-a-time server longer than the uploader waits."""

    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def verify_request(self, request, client_address) -> bool:
        with self._lock:
            address = client_address[0]
            if (sum(self._open.values()) >= MAX_CONNECTIONS
                    or self._open[address] >= MAX_PER_ADDRESS):
                log.warning("refused a connection from %s: too many open", address)
                return False
            self._open[address] += 1
            return True

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open[client_address[0]] -= 1
                if self._open[client_address[0]] <= 0:
                    del self._open[client_address[0]]


def serve(receiver: Receiver, host: str, port: int, timeout: float,
          connection_seconds: float = CONNECTION_SECONDS) -> int:
    """Answer requests until one good upload arrived (0) or timeout seconds passed (2)."""
    with ReceivingServer((host, port), handler_for(receiver, connection_seconds)) as server:
        log.info("waiting up to %.0f s for the bundle on %s port %d", timeout, host, port)
        deadline = time.monotonic() + timeout
        while not receiver.done:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("no valid upload arrived within %.0f s; closing port %d and giving "
                          "up. livestream is not installed on this machine: destroy it "
                          "(`livestream cloud down`) and run `livestream cloud up` again.",
                          timeout, port)
                return EXIT_TIMED_OUT
            server.timeout = min(1.0, left)
            server.handle_request()
    log.info("done; port %d is free for the server", port)
    return 0


def read_key(path: Path) -> bytes:
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != KEY_BYTES:
        raise ValueError(f"expected {KEY_BYTES} bytes")
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Receive the livestream bundle once, then exit.")
    parser.add_argument("--key-file", type=Path, required=True, help="hex deploy key")
    parser.add_argument("--dest", type=Path, required=True, help="folder to unpack into")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds to wait for a valid upload before giving up")
    parser.add_argument("--max-bytes", type=int, default=MAX_BUNDLE_BYTES)
    parser.add_argument("--connection-seconds", type=float, default=CONNECTION_SECONDS,
                        help="the most one connection may take, however it sends")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="cloud-receiver: %(levelname)s %(message)s")
    try:
        key = read_key(args.key_file)
    except (OSError, ValueError) as exc:
        log.error("cannot read the deploy key from %s: %s", args.key_file, exc)
        return 1
    if not can_unpack_into(args.dest):
        log.error("%s already holds files; remove it first (the receiver never overwrites)",
                  args.dest)
        return 1
    try:
        return serve(Receiver(key, args.dest, args.max_bytes), args.host, args.port, args.timeout,
                     args.connection_seconds)
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", args.host, args.port, exc.strerror)
        return 1


if __name__ == "__main__":
    sys.exit(main())
