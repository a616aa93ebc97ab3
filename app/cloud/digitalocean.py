"""A thin client for the few DigitalOcean API v2 calls `livestream cloud` makes.

Why not pydo, the official client: pydo sends the token through azure-core's bearer-token
policy, which refuses any URL that is not https, so it cannot talk to the loopback fake API
the tests run without TLS certificates or replacing its internals; and its retries and HTTP
logging live in azure-core's pipeline, out of our sight. We need six endpoints, so a small
layer over `requests` is easier to read and lets us decide exactly how rate limits (429 with
Retry-After / ratelimit-reset), server errors and the token are handled.

The token is only ever put into the Authorization header; it never appears in a message,
an exception or a log line.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)

TOKEN_HELP = ("Create a token with read and write scope at "
              "https://cloud.digitalocean.com/account/api/tokens and pass it with --api-key, "
              "the DIGITALOCEAN_TOKEN environment variable or [cloud] token_file.")
MAX_WAIT = 60.0  # never sleep longer than this between two attempts


class ApiError(Exception):
    """An API call that failed for good, with a message meant for a person."""

    def __init__(self, message: str, status: int | None = None, error_id: str = ""):
        super().__init__(message)
        self.status = status
        self.error_id = error_id

    @property
    def locked(self) -> bool:
        """The droplet is locked by an action in progress: the same call may work later."""
        return self.status == 422 and "locked" in str(self).lower()

    @property
    def maybe_done(self) -> bool:
        """No answer or a server error: the request may have been carried out anyway."""
        return self.status is None or self.status >= 500


class DigitalOcean:
    def __init__(self, token: str, base_url: str = "https://api.digitalocean.com",
                 timeout: float = 30.0, retries: int = 5, retry_seconds: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        if not token or not token.strip():
            raise ApiError("no DigitalOcean API token. " + TOKEN_HELP)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.retry_seconds = retry_seconds
        self.sleep = sleep
        self._session = requests.Session()
        self._session.headers.update({
            "Authorization": f"Bearer {token.strip()}",
            "Content-Type": "application/json",
            "User-Agent": "livestream-cloud",
        })

    def __repr__(self) -> str:  # keep the token out of any accidental print
        return f"DigitalOcean({self.base_url!r})"

    # ---- the calls we use -------------------------------------------------------------

    def sizes(self) -> list[dict]:
        return list(self.paginate("/v2/sizes", "sizes"))

    def droplets(self, tag: str) -> list[dict]:
        return list(self.paginate("/v2/droplets", "droplets", {"tag_name": tag}))

    def distribution_images(self) -> list[dict]:
        return list(self.paginate("/v2/images", "images", {"type": "distribution"}))

    def image(self, slug_or_id: str) -> dict | None:
        """One image by slug or id; None when the API has no such image."""
        try:
            return self.request("GET", f"/v2/images/{quote(str(slug_or_id), safe='')}")["image"]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def ssh_keys(self) -> list[dict]:
        return list(self.paginate("/v2/account/keys", "ssh_keys"))

    def droplet(self, droplet_id: int) -> dict:
        return self.request("GET", f"/v2/droplets/{int(droplet_id)}")["droplet"]

    def create_droplet(self, body: dict) -> dict:
        return self.request("POST", "/v2/droplets", json=body, expect=(202,))["droplet"]

    def delete_droplet(self, droplet_id: int) -> bool:
        """Destroy one droplet; False when it was already gone. A droplet still locked by an
        action is refused with 422 (ApiError.locked says so); the caller waits and retries."""
        try:
            self.request("DELETE", f"/v2/droplets/{int(droplet_id)}", expect=(204,))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ---- plumbing ---------------------------------------------------------------------

    def paginate(self, path: str, key: str, params: dict | None = None,
                 per_page: int = 200) -> Iterator[dict]:
        """Follow links.pages.next until the last page (bounded, in case a server loops)."""
        query = dict(params or {}, per_page=per_page, page=1)
        url: str | None = path
        for _ in range(1000):
            body = self.request("GET", url, params=query)
            yield from body.get(key, [])
            url = body.get("links", {}).get("pages", {}).get("next")
            if not url:
                return
            query = None  # the next link carries its own query string
        raise ApiError(f"{path}: more than 1000 pages; giving up")

    def request(self, method: str, url: str, params: dict | None = None,
                json: dict | None = None, expect: tuple[int, ...] = (200,)) -> dict:
        """One call with retries: rate limits always; server errors only when it is safe.

        A POST that met a server error may have created the droplet, so it is not repeated
        (a 429 means the request was not processed, so that is repeated).
        """
        if url.startswith("/"):
            url = self.base_url + url
        idempotent = method in ("GET", "DELETE")
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.request(method, url, params=params, json=json,
                                                  timeout=self.timeout)
            except requests.RequestException as exc:
                if idempotent and attempt <= self.retries:
                    wait = self._backoff(attempt)
                    log.warning("DigitalOcean API %s %s: %s; retrying in %.1f s",
                                method, _path(url), type(exc).__name__, wait)
                    self.sleep(wait)
                    continue
                raise ApiError(f"cannot reach the DigitalOcean API at {self.base_url}: "
                               f"{type(exc).__name__}. Check the network and [cloud] api_url."
                               ) from None
            if response.status_code in expect:
                return response.json() if response.content else {}
            retry = response.status_code == 429 or (
                idempotent and response.status_code in (500, 502, 503, 504))
            if retry and attempt <= self.retries:
                wait = self._wait_for(response, attempt)
                log.warning("DigitalOcean API %s %s answered %d; retrying in %.1f s (%d/%d)",
                            method, _path(url), response.status_code, wait, attempt,
                            self.retries)
                self.sleep(wait)
                continue
            raise _error(response, method, url)

    def _backoff(self, attempt: int) -> float:
        return min(MAX_WAIT, self.retry_seconds * 2 ** (attempt - 1))

    def _wait_for(self, response: requests.Response, attempt: int) -> float:
        """Retry-After when given, else the rate-limit reset time, else exponential backoff."""
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.strip().isdigit():
            return min(MAX_WAIT, float(retry_after))
        reset = response.headers.get("ratelimit-reset", "")
        if response.status_code == 429 and reset.strip().isdigit():
            # the real 429 carries only this (a Unix time); never spin on a past one
            return min(MAX_WAIT, max(self.retry_seconds, int(reset) - time.time()))
        return self._backoff(attempt)


def _path(url: str) -> str:
    """The part of a URL worth logging (no host, no query)."""
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def _error(response: requests.Response, method: str, url: str) -> ApiError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    error_id = str(body.get("id", "")) if isinstance(body, dict) else ""
    detail = str(body.get("message", "")) if isinstance(body, dict) else ""
    detail = detail or response.reason or "no details"
    what = f"DigitalOcean API {method} {_path(url)} failed "
    what += f"({status}{' ' + error_id if error_id else ''}): {detail}"
    lowered = detail.lower()
    if status == 401:
        hint = "The API token was refused. " + TOKEN_HELP
    elif status == 403:
        hint = "The token lacks permission; it needs read and write scope. " + TOKEN_HELP
    elif status == 429:
        hint = "Rate limited even after retries; wait a minute and try again."
    elif status == 422 and "locked" in lowered:
        hint = "The droplet is busy with an action; wait a minute and try again."
    elif status == 422 and "ssh key" in lowered:
        hint = ("Use the id or fingerprint of a key on your account "
                "(https://cloud.digitalocean.com/account/security, or `doctl compute ssh-key "
                "list`) in [cloud] ssh_keys or --ssh-key.")
    elif status == 422 and "limit" in lowered:
        hint = ("Your account's droplet limit is reached: destroy a droplet "
                "(`livestream cloud down` for ours) or ask DigitalOcean to raise the limit.")
    elif status == 422 and ("region" in lowered or "size" in lowered or "image" in lowered):
        hint = ("Pick another region, size or image with --region/--size/--image or in "
                "[cloud]; `doctl compute size list` shows which sizes each region offers.")
    elif status >= 500:
        hint = "DigitalOcean had a server error; try again in a few minutes."
    else:
        hint = ""
    return ApiError(f"{what}. {hint}".strip(), status=status, error_id=error_id)
