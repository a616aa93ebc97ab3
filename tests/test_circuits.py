"""Hostile audiences, round two: a Tor circuit is a client with budgets (an offline tor).

The server launches its own tor (DisableNetwork 1): tor is told to put a PROXY line naming
the rendezvous circuit before each connection to a listener only it uses. These tests send
such lines themselves, as tor would, one "circuit" per attacker or newcomer.
"""
from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stem.control
from chat_support import ChatViewer, field
from support import wait_for

CHAT_CONFIG = """
[tor]
enabled = true
torrc = { DisableNetwork = 1 }
max_streams = 20
[budgets]
identities = 5
captchas = 3
posts = 20
video = 2
push = 3
watching = 2
close_circuit_after = 30
"""


def proxy_line(circuit: int) -> bytes:
    """What tor sends first on each connection of circuit `circuit` (virtual port 80)."""
    return (f"PROXY TCP6 fc00:dead:beef:4dad::{circuit >> 16:x}:{circuit & 0xffff:x} ::1 "
            f"{circuit & 0xffff} 80\r\n").encode()


class CircuitConnection(http.client.HTTPConnection):
    """An HTTP connection that arrives the way tor delivers one from `circuit`."""

    def __init__(self, port: int, circuit: int):
        super().__init__("127.0.0.1", port, timeout=15)
        self.circuit = circuit

    def connect(self):
        super().connect()
        self.sock.sendall(proxy_line(self.circuit))


def over_circuit(port: int, circuit: int, method: str, path: str, body: str | None = None,
                 ) -> tuple[int, str]:
    connection = CircuitConnection(port, circuit)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def tor_conf(server) -> dict[str, str]:
    """The onion service's options as tor itself has them (asked on its control port)."""
    port_file = server.workdir / "state" / "tor" / "control-port"
    wait_for(port_file.exists, 30, what="the launched tor's control port")
    port = int(port_file.read_text().strip().rsplit(":", 1)[-1])
    with stem.control.Controller.from_port("127.0.0.1", port) as controller:
        controller.authenticate()
        return {name: controller.get_conf(name) for name in (
            "HiddenServicePort", "HiddenServiceExportCircuitID", "HiddenServiceMaxStreams",
            "HiddenServiceMaxStreamsCloseCircuit", "HiddenServicePoWDefensesEnabled",
            "HiddenServicePoWQueueRate")}


@pytest.fixture(scope="module")
def circuit_port(tor_conf) -> int:
    return int(tor_conf["HiddenServicePort"].rsplit(":", 1)[-1])


def test_one_segment_request_lists_nobody_and_video_over_time_does(server):
    """Finding 1: a HEAD or GET of a segment with any token showed the token as watching."""
    viewer = ChatViewer(server)
    segment = re.findall(r"^(\S+\.m4s)", requests.get(
        server.url + "/stream/stream.m3u8", timeout=5).text, re.M)[-1]
    invented = [f"invented-token-{i:08d}" for i in range(200)]
    for token in invented:
        assert requests.head(f"{server.url}/stream/{segment}?token={token}", timeout=5).ok
    for token in invented[:50]:
        assert requests.get(f"{server.url}/stream/{segment}?token={token}", timeout=5).ok
    viewer.get(f"/stream/{segment}")  # a real token's single request: not watching yet
    time.sleep(2.5)  # past the viewer count's 2 s publishing
    assert "<strong class=\"viewer-count\">0</strong>" in viewer.get("/chat/users").text
    # the same viewer, receiving video over more than a second, is listed
    with viewer.get("/stream.mp4", stream=True) as video:
        received = 0
        for chunk in video.iter_content(65536):
            received += len(chunk)
            if received > 200_000:
                break
        wait_for(lambda: "<strong class=\"viewer-count\">1</strong>"
                 in viewer.get("/chat/users").text, 15, interval=0.5,
                 what="the viewer to be listed as watching")


def test_tor_exports_circuits_with_proof_of_work_and_stream_limits(tor_conf, server):
    assert tor_conf["HiddenServiceExportCircuitID"] == "haproxy"
    assert tor_conf["HiddenServicePoWDefensesEnabled"] == "1"
    assert tor_conf["HiddenServicePoWQueueRate"] == "50"
    assert tor_conf["HiddenServiceMaxStreams"] == "20"
    assert tor_conf["HiddenServiceMaxStreamsCloseCircuit"] == "1"
    # the onion service points at the circuit listener, never at the public one
    assert tor_conf["HiddenServicePort"].startswith("80 127.0.0.1:")
    assert not tor_conf["HiddenServicePort"].endswith(f":{server.port}")
    assert "proof-of-work" in server.log()


def test_a_proxy_line_on_the_public_listener_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(proxy_line(4242) + b"GET /chat/form HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]


def test_the_circuit_listener_takes_nothing_without_tors_line(circuit_port):
    with socket.create_connection(("127.0.0.1", circuit_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096) == b"", "a connection without tor's PROXY line was served"
    # with it, the same request is served
    assert over_circuit(circuit_port, 7, "GET", "/")[0] == 200


def test_one_circuit_inventing_viewers_is_held_while_a_newcomer_gets_a_captcha_and_posts(
        server, circuit_port):
    """Findings 1 and 2: invented tokens are not tokens here, and the new tokens one circuit
    is given are counted; a newcomer on another circuit gets a captcha and posts."""
    attacker, stop = 1000, threading.Event()
    answers: list[int] = []

    def flood() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            path = "/chat/form" if n % 2 else f"/chat/form?token=invented-token-{n:010d}"
            try:
                answers.append(over_circuit(circuit_port, attacker, "GET", path)[0])
            except OSError:
                answers.append(0)
            n += 1

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(flood)
        try:
            time.sleep(1.0)  # the flood is well under way
            started = time.monotonic()
            newcomer = 2000
            status, page = over_circuit(circuit_port, newcomer, "GET", "/")
            assert status == 200
            token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
            captcha_id = None
            for _ in range(2):  # within two reloads
                status, form = over_circuit(circuit_port, newcomer, "GET",
                                            f"/chat/form?token={token}")
                captcha_id = field(form, "captcha_id")
                if captcha_id:
                    break
                time.sleep(1.0)
            assert captcha_id, "the newcomer got no captcha while one circuit flooded"
            to_captcha = time.monotonic() - started
            answer = ChatViewer(server, token).answer(captcha_id)
            body = (f"token={token}&nonce={field(form, 'nonce')}&captcha_id={captcha_id}"
                    f"&captcha={answer}&message=hello+during+the+flood")
            status, _ = over_circuit(circuit_port, newcomer, "POST",
                                     f"/chat/form?token={token}", body)
            assert status == 303, "the newcomer's post was refused"
            to_post = time.monotonic() - started
        finally:
            stop.set()
    served = answers.count(200)
    print(f"\nflood over one circuit: {len(answers)} form loads, {served} served, "
          f"{answers.count(429)} refused; newcomer: captcha after {to_captcha:.2f} s, "
          f"posted after {to_post:.2f} s")
    assert served <= 5, f"one circuit was handed {served} new identities (budget 5)"
    assert answers.count(429) >= len(answers) - 5
    # a circuit that kept pushing is reported to tor for closing
    wait_for(lambda: "closing a circuit that kept going over its budgets" in server.log(), 10,
             what="the flooding circuit to be closed")
    assert "hello during the flood" in ChatViewer(server).messages()


def test_each_circuit_has_its_own_video_allowance(server, circuit_port):
    held = []
    try:
        for _ in range(2):
            connection = CircuitConnection(circuit_port, 3000)
            connection.request("GET", "/stream.mp4")
            response = connection.getresponse()
            assert response.status == 200
            held.append(connection)
        assert over_circuit(circuit_port, 3000, "GET", "/stream.mp4")[0] == 429
        # another circuit is not affected
        connection = CircuitConnection(circuit_port, 3001)
        connection.request("GET", "/stream.mp4")
        assert connection.getresponse().status == 200
        held.append(connection)
    finally:
        for connection in held:
            connection.close()


def test_a_circuit_over_its_captcha_budget_is_told_so(server, circuit_port):
    circuit, told = 4000, None
    for _ in range(6):
        status, page = over_circuit(circuit_port, circuit, "GET", "/")
        token = re.search(r"/chat/form\?token=([\w-]+)", page).group(1)
        status, form = over_circuit(circuit_port, circuit, "GET", f"/chat/form?token={token}")
        if status == 429:
            told = form
            break
    assert told is not None and "Too many captchas went to your connection" in told
