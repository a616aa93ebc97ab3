#!/usr/bin/env python3
"""Carry the stream's chat into an IRC channel, using the server's event socket.

    python3 docs/examples/chat_to_irc.py --state state --irc irc.example.net:6667 \\
        --channel '#movienight' --nick streamchat

Run it as the account that runs `livestream serve` (the socket is that account's only).
Every chat message becomes one line in the channel, "name: text"; the broadcaster's own
messages are marked. Standard library only; stop it with Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import socket
import threading
from pathlib import Path


def irc_connect(address: str, nick: str, channel: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    irc = socket.create_connection((host, int(port)), timeout=30)
    irc.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :stream chat\r\nJOIN {channel}\r\n".encode())
    irc.settimeout(None)
    return irc


def answer_pings(irc: socket.socket) -> None:
    """IRC servers drop a client that does not answer PING."""
    for line in irc.makefile("r", encoding="utf-8", errors="replace"):
        if line.startswith("PING"):
            irc.sendall(("PONG" + line[4:].rstrip("\r\n") + "\r\n").encode())


def one_line(text: str) -> str:
    return " ".join(text.split())[:400]  # no line breaks: each would be an IRC command


def bridge(state: Path, irc: socket.socket, channel: str) -> None:
    events = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    events.connect(str(state / "events.sock"))
    for line in events.makefile("r", encoding="utf-8"):
        event = json.loads(line)
        if event["event"] != "message":
            continue
        who = "broadcaster" if event["broadcaster"] else one_line(event["name"])
        irc.sendall(f"PRIVMSG {channel} :{who}: {one_line(event['body'])}\r\n".encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, default=Path("state"),
                        help="the server's state folder (server.state_dir)")
    parser.add_argument("--irc", required=True, help="host:port of the IRC server")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--nick", default="streamchat")
    args = parser.parse_args()
    irc = irc_connect(args.irc, args.nick, args.channel)
    threading.Thread(target=answer_pings, args=(irc,), daemon=True).start()
    try:
        bridge(args.state, irc, args.channel)
    except KeyboardInterrupt:
        irc.sendall(b"QUIT :bye\r\n")


if __name__ == "__main__":
    main()
