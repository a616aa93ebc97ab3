"""`cloud play`'s watch party: played on this machine, followed by the droplet through SSH.

A party pushed as RTMP restarts the droplet's broadcast at every pause, seek or next item
(every ffmpeg run is a new publish) and sends the stream key and the video in clear. Instead
the party plays here exactly as a local one does (one init, segment numbers and media time
going on across every control; app/sources/party) into a folder of ours, a loopback-only
`serve --private-origin` serves it, and one SSH session (tunnel.py) forwards a port on the
droplet's loopback to that origin and runs `livestream follow` there: the droplet's own edge
puller brings the parts into its stream folder and passes the pause on. The same session's
standard input and output carry the droplet's party controls (its /broadcaster form, its
`livestream party`) back here (app/sources/party/bridge.py); `livestream party` here works
as with any local party. Nothing listens on a public address for any of it.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from app.cloud.tunnel import Tunnel, TunnelError
from app.config import PROJECT_DIR, Config
from app.runtime import processes
from app.runtime.ports import free_loopback_port
from app.sources.party import control

log = logging.getLogger(__name__)

START_SECONDS = 60.0  # for the origin to answer, and for the SSH session to come up
SESSION_RETRIES = 5  # a dropped SSH session is opened again this often before giving up
END_SECONDS = 20.0  # after the party: for the droplet's viewers to get the stream's end
MAX_LINE = 4096


class RemotePartyError(RuntimeError):
    """Something a person must act on (printed by `cloud play`)."""


class RemoteParty:
    def __init__(self, config: Config, way: Tunnel, play_argv: Callable[[Path], list[str]],
                 watch_url: str, out: Callable[[str], None]):
        self.config = config
        self.way = way
        self.play_argv = play_argv  # `livestream play ... --party` into a given folder
        self.watch_url = watch_url
        self.out = out
        self.folder = config.state_dir / "cloud"
        self.stream_dir = self.folder / "stream"
        self.children: list[subprocess.Popen] = []

    def run(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        port = free_loopback_port()
        try:
            self._start_origin(port)
            party = self._start(self.play_argv(self.stream_dir))
            session = self._open_session(port)
            status = self._follow(party, session, port)
            self._wait_for_the_end()
            return status
        finally:
            for child in reversed(self.children):  # the session, the party, then its origin
                processes.stop(child, 15, signal.SIGINT)

    # --- the parts ----------------------------------------------------------------------

    def _start(self, argv: list[str], env: dict | None = None, stdout=None,
               stdin=subprocess.DEVNULL, stderr=None) -> subprocess.Popen:
        try:
            child = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdin=stdin,
                                     stdout=stdout, stderr=stderr)
        except OSError as exc:
            raise RemotePartyError(f"cannot run {argv[0]}: {exc.strerror}") from None
        self.children.append(child)
        return child

    def _start_origin(self, port: int) -> None:
        """`serve` on loopback for the SSH session only; its log in state/cloud/origin.log."""
        config_file = str(self.config.source or PROJECT_DIR / "config.toml")
        env = dict(os.environ, LIVESTREAM_STATE_DIR=str(self.folder / "origin"))
        with open(self.folder / "origin.log", "ab") as log_file:
            origin = self._start([sys.executable, "-m", "app.cli", "--config", config_file,
                                  "serve", "--private-origin", "--port", str(port),
                                  "--stream-dir", str(self.stream_dir)],
                                 env=env, stdout=log_file, stderr=log_file)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/status", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if origin.poll() is not None or time.monotonic() > deadline:
                raise RemotePartyError(f"the local origin did not start; see "
                                       f"{self.folder / 'origin.log'}")
            time.sleep(0.2)

    def _open_session(self, port: int) -> subprocess.Popen:
        """ssh: the droplet's loopback tunnel_port to our origin, and `livestream follow`
        there with the party's controls on the session's standard input and output."""
        remote_port = self.config.cloud.tunnel_port
        try:
            argv = self.way.argv(
                "-R", f"127.0.0.1:{remote_port}:127.0.0.1:{port}",
                command=(self.config.cloud.remote_command, "follow",
                         f"http://127.0.0.1:{remote_port}/", "--controls-over-stdio"))
        except TunnelError as exc:
            raise RemotePartyError(str(exc)) from None
        session = self._start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        threading.Thread(target=self._answer, args=(session,), name="droplet controls",
                         daemon=True).start()
        return session

    def _answer(self, session: subprocess.Popen) -> None:
        """The droplet's party controls, sent on to the party here; each answer back."""
        assert session.stdout is not None and session.stdin is not None
        try:
            while line := session.stdout.readline(MAX_LINE):
                try:
                    asked = json.loads(line)
                    number = int(asked["id"])
                    command, argument = str(asked["command"]), str(asked.get("argument", ""))
                except (ValueError, KeyError, TypeError):
                    continue
                try:
                    reply = control.send(self.config.state_dir, command, argument[:64])
                except control.ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                log.info("the droplet's /broadcaster: %s %s -> %s", command, argument,
                         "done" if reply.get("ok") else reply.get("error"))
                session.stdin.write(json.dumps({"id": number, **reply}).encode() + b"\n")
                session.stdin.flush()
        except (OSError, ValueError):
            return  # the session ended: _follow opens a new one

    def _follow(self, party: subprocess.Popen, session: subprocess.Popen, port: int) -> int:
        """Until the party ends; a dropped SSH session is opened again (bounded)."""
        retries = 0
        opened = time.monotonic()
        while party.poll() is None:
            if session.poll() is not None:
                if retries >= SESSION_RETRIES:
                    raise RemotePartyError(
                        f"the SSH session to the droplet ended {retries + 1} times (status "
                        f"{session.returncode}); see ssh's message above")
                if time.monotonic() - opened > START_SECONDS:
                    retries = 0  # it had been up a good while: a new trouble
                retries += 1
                self.out(f"the SSH session to the droplet ended (status {session.returncode});"
                         f" opening it again ({retries}/{SESSION_RETRIES})")
                self.children.remove(session)
                time.sleep(min(2.0 * retries, 10.0))
                session = self._open_session(port)
                opened = time.monotonic()
            time.sleep(0.2)
        return party.returncode

    def _wait_for_the_end(self) -> None:
        """The party wrote its last segment and ENDLIST here; give the droplet's edge the
        moment it needs to pass them on before the session closes."""
        deadline = time.monotonic() + END_SECONDS
        url = self.watch_url.rstrip("/") + "/api/status"
        while time.monotonic() < deadline:
            try:
                if not requests.get(url, timeout=5).json().get("online", True):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)


__all__ = ["RemoteParty", "RemotePartyError"]
