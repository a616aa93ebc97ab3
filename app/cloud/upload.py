"""Stage 2 of `cloud up`: hand the sealed project bundle to the droplet's one-shot receiver.

The droplet may still be booting when `cloud up` sees it active, so connection failures
and 5xx answers are retried until a deadline, with a progress line per attempt. Each attempt
fetches the receiver's current challenge and seals the bundle for it (receiver.py
explains the construction); the receiver's answer must carry a receipt only the key holder
can make, so a stranger answering on the droplet's address cannot pretend to have it.
"""
from __future__ import annotations

import hmac
import time
from collections.abc import Callable

import requests

from app.cloud.receiver import CHALLENGE_BYTES, MAX_BUNDLE_BYTES, receipt, seal


class UploadError(Exception):
    """The bundle could not be delivered; the message says why and what to do."""


def send_bundle(base_url: str, key: bytes, bundle: bytes, *, deadline_seconds: float,
                interval: float, out: Callable[[str], None],
                sleep: Callable[[float], None] = time.sleep,
                request_timeout: float = 30.0) -> None:
    """POST the bundle to base_url (http://IP:PORT/) until the receiver confirms it."""
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise UploadError(f"the project bundle is {len(bundle)} bytes, over the receiver's "
                          f"{MAX_BUNDLE_BYTES}-byte cap; keep media out of app/, templates/ "
                          "and static/")
    out(f"uploading the project ({len(bundle) / 1024:.0f} KiB, encrypted) to {base_url}")
    started = time.monotonic()
    while True:
        try:
            state = _attempt(base_url, key, bundle, request_timeout)
        except requests.RequestException as exc:
            state = "receiver not up yet" if isinstance(
                exc, (requests.ConnectionError, requests.Timeout)) else type(exc).__name__
        elapsed = time.monotonic() - started
        if state is None:
            out(f"  uploaded ({elapsed:.0f} s)")
            return
        if elapsed > deadline_seconds:
            raise UploadError(f"could not upload the project to {base_url} within "
                              f"{elapsed:.0f} s ({state}); giving up ([cloud] ready_timeout). "
                              "On the droplet, /var/log/cloud-init-output.log says why.")
        out(f"  {state} ({elapsed:.0f} s)")
        sleep(interval)


def _attempt(base_url: str, key: bytes, bundle: bytes, timeout: float) -> str | None:
    """One try: None when delivered, a short state to retry on, UploadError when hopeless."""
    answer = requests.get(base_url + "challenge", timeout=min(timeout, 10.0))
    if answer.status_code != 200:
        return f"HTTP {answer.status_code} for the challenge"
    try:
        challenge = bytes.fromhex(answer.text.strip())
    except ValueError:
        challenge = b""
    if len(challenge) != CHALLENGE_BYTES:
        return "something other than the receiver answers"
    envelope = seal(key, challenge, bundle)
    answer = requests.post(base_url + "bundle", data=envelope, timeout=timeout,
                           headers={"Content-Type": "application/octet-stream"})
    if answer.status_code == 409 or answer.status_code >= 500:
        return f"HTTP {answer.status_code}: {_short(answer.text)}"
    if answer.status_code != 200:
        raise UploadError(f"the droplet refused the bundle: HTTP {answer.status_code} "
                          f"{_short(answer.text)}")
    try:
        proof = bytes.fromhex(answer.text.strip())
    except ValueError:
        proof = b""
    if not hmac.compare_digest(proof, receipt(key, envelope)):
        raise UploadError("the droplet's address accepted the upload without proving it holds "
                          "the deploy key; something else answers there")
    return None


def _short(text: str) -> str:
    """A peer's message, shortened and printable (it is not ours to trust)."""
    printable = "".join(c if c.isprintable() else "?" for c in text.strip())
    return printable[:200]
