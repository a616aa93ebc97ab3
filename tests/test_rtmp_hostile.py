"""Hostile RTMP peers before the stream key: bounded memory, no crash, no delay for the real
publisher, nothing about the host in the handshake.

The pre-key parser (chunk stream, AMF0, the server's command loop up to `publish`) is fuzzed
in memory with a memory bound in the assertion; then 16 hostile peers hit a real
`livestream ingest` process over TCP while its peak RSS is read from /proc.
"""
from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import free_port, wait_for
from test_ingest import ROOT, cli, finish, push, wait_for_port

from app import config as configuration
from app.sources.rtmp.amf0 import RtmpError, amf_encode
from app.sources.rtmp.chunks import HANDSHAKE_SIZE, RtmpConnection
from app.sources.rtmp.server import IngestServer, PublishRefused

FUZZ_EXAMPLES = int(os.environ.get("RTMP_FUZZ_EXAMPLES", "600"))
# What one unauthenticated peer may cost in Python allocations while its bytes are parsed:
# the buffered half-messages (32 KiB) plus one message being assembled and decoded.
MEMORY_BOUND = 160 * 1024
HELD_BOUND = 32 * 1024  # half-received messages one peer may make us hold before its key


# --- building hostile byte streams -------------------------------------------------------

def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes((fmt << 6 | csid,))
    if csid < 320:
        return bytes((fmt << 6, csid - 64))
    return bytes((fmt << 6 | 1,)) + (csid - 64).to_bytes(2, "little")


def chunk(fmt: int, csid: int, ts: int, length: int, msg_type: int, stream_id: int,
          payload: bytes) -> bytes:
    out = basic_header(fmt, csid)
    ts_field = min(ts, 0xFFFFFF)
    if fmt < 3:
        out += ts_field.to_bytes(3, "big")
    if fmt < 2:
        out += length.to_bytes(3, "big") + bytes((msg_type,))
    if fmt == 0:
        out += struct.pack("<I", stream_id)
    if ts_field == 0xFFFFFF:
        out += struct.pack(">I", ts & 0xFFFFFFFF)
    return out + payload


def message(csid: int, msg_type: int, payload: bytes, chunk_size: int = 128) -> bytes:
    """A whole message as a well-behaved peer would split it."""
    out = chunk(0, csid, 0, len(payload), msg_type, 0, payload[:chunk_size])
    for start in range(chunk_size, len(payload), chunk_size):
        out += basic_header(3, csid) + payload[start:start + chunk_size]
    return out


HANDSHAKE = b"\x03" + bytes(HANDSHAKE_SIZE) + bytes(HANDSHAKE_SIZE)
CONNECT = message(3, 20, amf_encode("connect", 1.0, {"app": "live", "type": "nonprivate"}))
# The probe from the review: a header in the middle of a message shrinks it below what is
# buffered, so the old parser's remaining size went negative and it read until EOF.
SHRINK = (chunk(0, 4, 0, 12000, 20, 0, bytes(128)) + chunk(1, 4, 0, 10, 20, 0, b"")
          + bytes(256 * 1024))
# Shrunk to one byte less than buffered, the remaining size was exactly -1: "read to EOF".
TO_EOF = (chunk(0, 4, 0, 12000, 20, 0, bytes(128)) + chunk(1, 4, 0, 127, 20, 0, b"")
          + bytes(256 * 1024))

u24 = st.integers(0, 0xFFFFFF)
interesting_lengths = st.one_of(st.sampled_from([0, 1, 4, 127, 128, 129, 16383, 16384, 16385,
                                                 65535, 65536, 0xFFFFFF]), u24)
msg_types = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 22]),
                      st.integers(0, 255))
csids = st.one_of(st.integers(2, 10), st.integers(0, 65599))
timestamps = st.one_of(st.sampled_from([0, 0xFFFFFE, 0xFFFFFF, 0x1000000, 0xFFFFFFFF]),
                       st.integers(0, 0xFFFFFFFF))
u32 = st.one_of(st.sampled_from([0, 1, 127, 128, 4096, 65536, 0x7FFFFFFF, 0x80000000,
                                 0xFFFFFFFF]), st.integers(0, 0xFFFFFFFF))
amf_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=40),
              st.sampled_from(["connect", "createStream", "publish", "play", "FCPublish",
                               "releaseStream", "live", ""])),
    lambda inner: st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12)

raw_chunks = st.builds(chunk, st.integers(0, 3), csids, timestamps, interesting_lengths,
                       msg_types, st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
controls = st.builds(
    lambda kind, value: message(2, kind, struct.pack(">I", value)),
    st.sampled_from([1, 2, 3, 5]), u32)
peer_bandwidth = st.builds(lambda value, limit: message(2, 6, struct.pack(">IB", value, limit)),
                           u32, st.integers(0, 255))
user_control = st.builds(lambda event, value: message(2, 4, struct.pack(">HI", event, value)),
                         st.integers(0, 65535), u32)
commands = st.builds(
    lambda name, values, csid, size, amf3: message(
        csid, 17 if amf3 else 20, (b"\x00" if amf3 else b"") + amf_encode(name, *values),
        size),
    st.sampled_from(["connect", "createStream", "publish", "play", "play2", "FCPublish",
                     "releaseStream", "deleteStream", "_checkbw", "x" * 300]),
    st.lists(amf_values, max_size=5), st.integers(2, 8), st.sampled_from([128]),
    st.booleans())
raw_amf = st.builds(lambda body: message(3, 20, body), st.binary(max_size=400))
filler = st.builds(lambda size, byte: bytes((byte,)) * size, st.integers(0, 300 * 1024),
                   st.integers(0, 255))
pieces = st.one_of(raw_chunks, controls, peer_bandwidth, user_control, commands, raw_amf,
                   st.binary(max_size=64), filler)
streams = st.builds(
    lambda start, body: start + b"".join(body),
    st.one_of(st.just(HANDSHAKE), st.just(HANDSHAKE + CONNECT), st.binary(max_size=40),
              st.builds(lambda c1: b"\x03" + c1, st.binary(min_size=3072, max_size=3072))),
    st.lists(pieces, max_size=12))


# --- the pre-key parser, fed from memory -------------------------------------------------

class MemorySocket:
    """What RtmpConnection needs of a socket: the peer's bytes to read, a sink for ours."""

    def __init__(self, data: bytes):
        self.data = data
        self.sent = 0

    def makefile(self, mode: str):
        return io.BufferedReader(io.BytesIO(self.data), 8192)

    def sendall(self, data: bytes) -> None:
        self.sent += len(data)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def ingest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    config = configuration.from_dict({
        "server": {"state_dir": str(folder / "state")},
        "stream": {"dir": str(folder / "stream")},
        "ingest": {"host": "127.0.0.1", "port": free_port()}})
    return IngestServer(config)  # never started: only its command loop is used


def held(conn: RtmpConnection) -> int:
    return sum(len(s.buffer) for s in conn.streams.values())


def pre_key(server: IngestServer, data: bytes) -> tuple[int, int]:
    """Everything a peer can reach before its key is checked; (peak bytes, most held)."""
    conn = RtmpConnection(MemorySocket(data))
    most = 0
    original = conn.read_message

    def watched():
        nonlocal most
        try:
            return original()
        finally:
            most = max(most, held(conn))

    conn.read_message = watched
    tracemalloc.start()
    try:
        conn.handshake()
        name = server._until_publish(conn)
        server._admit(conn, "192.0.2.1", name)
    except (RtmpError, EOFError, PublishRefused):
        pass  # refusing is the right answer; anything else fails the test
    finally:
        most = max(most, held(conn))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, most


FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(streams)
@example(HANDSHAKE + SHRINK)
@example(HANDSHAKE + TO_EOF)
@example(HANDSHAKE + CONNECT + SHRINK)
@example(HANDSHAKE + chunk(0, 3, 0, 0xFFFFFF, 20, 0, bytes(128)) + bytes(300 * 1024))
@example(HANDSHAKE + message(2, 1, struct.pack(">I", 0xFFFFFF))
         + chunk(0, 3, 0, 0xFFFFFF, 9, 0, bytes(200 * 1024)))
@example(HANDSHAKE + b"".join(chunk(0, c, 0, 16000, 8, 0, bytes(128)) for c in range(2, 70)))
@example(HANDSHAKE + message(3, 20, b"\x02\x00\x07connect\x0a\x00\x00\x00\x01\x05"
                             + amf_encode({"app": "live"})))  # a list as transaction id
@example(HANDSHAKE + chunk(0, 3, 0xFFFFFF, 300, 20, 0, bytes(128))
         + chunk(3, 3, 0, 0, 0, 0, b"\x00\x00\x00\x01" + bytes(128)))
def test_pre_key_parser_never_crashes_and_stays_small(ingest, data):
    peak, most = pre_key(ingest, data)
    assert most <= HELD_BOUND, f"held {most} bytes of half-messages before the key"
    assert peak < MEMORY_BOUND, f"parsing took {peak} bytes before the key"


def test_a_header_that_changes_a_half_read_message_is_refused():
    conn = RtmpConnection(MemorySocket(HANDSHAKE + SHRINK))
    conn.handshake()
    with pytest.raises(RtmpError, match="half-read"):
        conn.read_message()
    assert conn.bytes_in < 2 * HANDSHAKE_SIZE + 1000, "it stopped reading at once"


# --- real peers against a real `livestream ingest` ---------------------------------------

def start_ingest(folder: Path, ingest: str = 'host = "127.0.0.1"', extra: str = "",
                 ) -> tuple[subprocess.Popen, int, Path, Path]:
    """A `livestream ingest` process; (process, RTMP port, config, log)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "config.toml"
    config.write_text(f'[server]\nstate_dir = "state"\nport = {free_port()}\n'
                      f'[stream]\ndir = "stream"\n[ingest]\nport = {port}\n{ingest}\n{extra}')
    log = folder / "ingest.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cli(config, "--log-level", "info", "ingest"), cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port, proc)
    return proc, port, config, log


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def client_handshake(sock: socket.socket) -> bytes:
    """C0+C1, then S0+S1+S2, then C2; returns S1."""
    sock.sendall(b"\x03" + bytes(HANDSHAKE_SIZE))
    got = b""
    while len(got) < 1 + 2 * HANDSHAKE_SIZE:
        part = sock.recv(65536)
        if not part:
            raise EOFError("closed during the handshake")
        got += part
    sock.sendall(got[1:1 + HANDSHAKE_SIZE])
    return got[1:1 + HANDSHAKE_SIZE]


ATTACKS = [
    TO_EOF[:-256 * 1024],  # the review's probe, then zeros until the server gives up
    SHRINK[:-256 * 1024],
    chunk(0, 3, 0, 0xFFFFFF, 20, 0, bytes(128)),  # one huge message
    message(2, 1, struct.pack(">I", 0xFFFFFF)) + chunk(0, 3, 0, 60000, 9, 0, b""),
    b"".join(chunk(0, c, 0, 16000, 8, 0, bytes(128)) for c in range(2, 70)),  # many streams
    CONNECT + chunk(0, 5, 0xFFFFFF, 4000, 18, 1, b""),  # extended timestamps, media early
    # within every limit: two half-sent messages held as long as the deadline allows, then
    # zeros, which parse as endless empty messages
    CONNECT + b"".join(chunk(0, c, 0, 16000, 8, 0, bytes(128))
                       + b"".join(basic_header(3, c) + bytes(128) for _ in range(123))
                       for c in (4, 5)),
]
HOSTILE_PEERS = 16
HOSTILE_SECONDS = 8.0
PER_CONNECTION = 48 * 1024 * 1024  # what one connection may push: bounds the damage of a bug
RSS_LIMIT_KIB = 120 * 1024


def hostile_peer(port: int, index: int, until: float, sent: list[int],
                 connections: list[int]) -> None:
    round_ = 0
    zeros = bytes(64 * 1024)
    while time.monotonic() < until:
        attack = ATTACKS[(index + round_) % len(ATTACKS)]
        round_ += 1
        connections[index] += 1
        try:
            # each peer its own address, so the per-address cap does not thin them out
            with socket.create_connection(("127.0.0.1", port), timeout=3,
                                          source_address=(f"127.0.0.{10 + index}", 0)) as sock:
                client_handshake(sock)
                sock.sendall(attack)
                pushed = len(attack)
                while pushed < PER_CONNECTION and time.monotonic() < until:
                    sock.sendall(zeros)
                    pushed += len(zeros)
                sent[index] += pushed
        except (OSError, EOFError):
            pass  # refused and closed: the next round tries another attack


@pytest.mark.slow
def test_sixteen_hostile_peers_before_the_key_keep_the_ingest_small(tmp_path):
    proc, port, _, log = start_ingest(tmp_path / "hostile")
    try:
        time.sleep(0.5)
        before = memory_kib(proc.pid, "VmRSS")
        until = time.monotonic() + HOSTILE_SECONDS
        sent, connections = [0] * HOSTILE_PEERS, [0] * HOSTILE_PEERS
        peers = [threading.Thread(target=hostile_peer, args=(port, i, until, sent, connections),
                                  daemon=True) for i in range(HOSTILE_PEERS)]
        for peer in peers:
            peer.start()
        while time.monotonic() < until:  # stop early if memory runs away (the old parser)
            rss = memory_kib(proc.pid, "VmRSS")
            assert rss < RSS_LIMIT_KIB, f"ingest grew to {rss // 1024} MiB under hostile peers"
            time.sleep(0.1)
        for peer in peers:
            peer.join(timeout=10)
        peak = memory_kib(proc.pid, "VmHWM")
        assert proc.poll() is None, "the ingest survived"
        print(f"\ningest RSS {before // 1024} MiB before, peak {peak // 1024} MiB after "
              f"{HOSTILE_PEERS} hostile peers for {HOSTILE_SECONDS:.0f} s "
              f"({sum(connections)} connections, {sum(sent) // (1024 * 1024)} MiB sent)")
        assert peak < RSS_LIMIT_KIB, f"peak RSS {peak // 1024} MiB"
        assert peak - before < 24 * 1024, f"grew by {(peak - before) // 1024} MiB"
        text = log.read_text()
        assert "Traceback" not in text and "ValueError" not in text, text[-3000:]
        assert "half-read message" in text and "over the limit" in text
    finally:
        stop(proc)


def silent_holder(port: int, count: int, stop_at: threading.Event, opened: list[int]) -> None:
    """Keeps `count` connections from 127.0.0.2 open and silent, reopening any closed."""
    held_socks: list[socket.socket] = []
    try:
        while not stop_at.is_set():
            for sock in list(held_socks):
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        held_socks.remove(sock)
                        sock.close()
                except BlockingIOError:
                    pass
                except OSError:
                    held_socks.remove(sock)
                    sock.close()
            while len(held_socks) < count and not stop_at.is_set():
                sock = socket.socket()
                try:
                    sock.bind(("127.0.0.2", 0))
                    sock.connect(("127.0.0.1", port))
                except OSError:
                    sock.close()
                    break  # try again on the next round
                held_socks.append(sock)
                opened[0] += 1
            stop_at.wait(0.2)
    finally:
        for sock in held_socks:
            sock.close()


@pytest.mark.slow
def test_silent_connections_do_not_delay_a_real_publisher(tmp_path):
    proc, port, config, log = start_ingest(tmp_path / "silent",
                                           extra="max_pending = 4\nhandshake_timeout = 10.0\n")
    stop_at = threading.Event()
    opened = [0]
    holder = threading.Thread(target=silent_holder, args=(port, 5, stop_at, opened),
                              daemon=True)
    try:
        key = subprocess.run(cli(config, "key"), cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()[-1]
        holder.start()
        wait_for(lambda: opened[0] >= 5, timeout=5, what="silent connections open")
        time.sleep(0.5)
        started = time.monotonic()
        publisher = push(f"rtmp://127.0.0.1:{port}/live/{key}", 4)
        stream = tmp_path / "silent" / "stream"
        wait_for(lambda: "publisher 127.0.0.1 is live" in log.read_text(), timeout=9,
                 what="the real publisher admitted while silent connections are held")
        admitted = time.monotonic() - started
        code, err = finish(publisher)
        assert code == 0, err
        assert ".m4s" in (stream / "stream.m3u8").read_text()
        print(f"\nreal publisher live {admitted:.2f} s after connecting, with 5 silent "
              f"connections held ({opened[0]} opened)")
        assert admitted < 5, f"the publisher waited {admitted:.1f} s"
    finally:
        stop_at.set()
        holder.join(timeout=5)
        stop(proc)


def listening_address(port: int) -> str:
    """The local address a TCP socket listens on for `port`, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":
            return socket.inet_ntoa(struct.pack("<I", int(address, 16)))
    raise AssertionError(f"nothing listens on {port}")


def test_onion_mode_keeps_the_ingest_on_loopback_and_s1_says_nothing(tmp_path):
    proc, port, _, log = start_ingest(tmp_path / "onion", ingest="",
                                      extra="[tor]\nenabled = true\n")
    try:
        assert listening_address(port) == "127.0.0.1"
        assert "listens on 127.0.0.1 only" in log.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            s1 = client_handshake(sock)
        assert s1[:4] == b"\x00\x00\x00\x00", "S1's time field would be the host's uptime"
        assert s1[4:8] == b"\x00\x00\x00\x00"
    finally:
        stop(proc)
    # an address set in the config is still honoured
    proc, port, _, log = start_ingest(tmp_path / "explicit", ingest='host = "0.0.0.0"',
                                      extra="[tor]\nenabled = true\n")
    try:
        assert listening_address(port) == "0.0.0.0"
        assert "listens on 127.0.0.1 only" not in log.read_text()
    finally:
        stop(proc)


def test_without_onion_an_empty_host_means_every_interface(tmp_path):
    proc, port, _, _ = start_ingest(tmp_path / "plain", ingest="")
    try:
        assert listening_address(port) == "0.0.0.0"
    finally:
        stop(proc)
