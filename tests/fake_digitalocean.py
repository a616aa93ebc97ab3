"""A stand-in for the DigitalOcean API v2 endpoints `livestream cloud` uses, as strict as the
published OpenAPI specification (github.com/digitalocean/openapi) where we depend on it.

Served on 127.0.0.1 by the tests. What it enforces and how it answers:
- Bearer-token authentication; a wrong token gets 401 with the body the real API sends
  (`{"id": "Unauthorized", "message": "Unable to authenticate you"}`) and the rate-limit
  headers, which every answer carries (ratelimit-limit, -remaining, -reset as a Unix time).
- POST /v2/droplets: JSON body; `name` matches the specification's pattern and is at most
  255 characters; `size` and `image` are required; every tag matches `^[a-zA-Z0-9_\\-:]+$`
  (at most 255 characters); `user_data` is at most 64 KiB; the image must be a slug or id
  the account can use; every SSH key must be an id or fingerprint on the account; the size
  must be offered in the region; the account's droplet limit. Each refusal is a 422 with
  `id: unprocessable_entity`. 202 with status "new" and `locked: true`, which turns
  "active" (unlocked, with networks.v4) after a few polls.
- Droplets can also be `off` or `archive` (add_droplet), and can be kept locked
  (lock_deletes: DELETE is refused with 422 while locked).
- GET /v2/droplets filters by `tag_name` or by `name` (exact, case-insensitive), never both
  (400, as the specification says they cannot be combined).
- GET /v2/sizes, /v2/images (with `type=distribution`), /v2/images/{id or slug},
  /v2/account/keys, /v2/regions: saved-answer-like data. Pages follow `page`/`per_page`
  (per_page at most 200); an answer that fits one page has `links: {}`, longer ones
  `links.pages` with first/prev/next/last; every list has `meta.total`.
- DELETE /v2/droplets/{id}: 204; the droplet lingers in listings for a moment, as real
  deletions are asynchronous; 404 for an unknown id.
- Scripted one-off failures (fail_next), a 429 carrying only the rate-limit headers
  (rate_limit_next), and a 5xx on create that created the droplet anyway (create_then_fail).
`on_create(droplet_id, body)` and `on_delete(droplet_id)`, when set, let a test boot and stop
what the droplet would run (see fake_droplet.py).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

NAME = re.compile(r"^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$")
TAG = re.compile(r"^[a-zA-Z0-9_\-:]+$")
USER_DATA_LIMIT = 64 * 1024
MAX_PER_PAGE = 200
ALL_REGIONS = ["ams3", "blr1", "fra1", "lon1", "nyc1", "nyc3", "sfo3", "sgp1", "syd1", "tor1"]

SIZES = [
    # as the real API lists them in 2026: the 512 MB size IS offered in fra1
    {"slug": "s-1vcpu-512mb-10gb", "memory": 512, "vcpus": 1, "disk": 10, "transfer": 0.5,
     "price_monthly": 4.0, "price_hourly": 0.00595, "available": True,
     "regions": ["ams3", "fra1", "lon1", "nyc1", "sfo3", "sgp1", "syd1", "tor1"],
     "description": "Basic"},
    {"slug": "s-1vcpu-1gb", "memory": 1024, "vcpus": 1, "disk": 25, "transfer": 1.0,
     "price_monthly": 6.0, "price_hourly": 0.00893, "available": True,
     "regions": ALL_REGIONS, "description": "Basic"},
    {"slug": "s-1vcpu-2gb", "memory": 2048, "vcpus": 1, "disk": 50, "transfer": 2.0,
     "price_monthly": 12.0, "price_hourly": 0.01786, "available": True,
     "regions": ALL_REGIONS, "description": "Basic"},
    {"slug": "s-2vcpu-2gb", "memory": 2048, "vcpus": 2, "disk": 60, "transfer": 3.0,
     "price_monthly": 18.0, "price_hourly": 0.02679, "available": True,
     "regions": ["fra1", "lon1", "sfo3"], "description": "Basic"},
    # a size offered nowhere any more: never to be picked
    {"slug": "512mb", "memory": 512, "vcpus": 1, "disk": 20, "transfer": 1.0,
     "price_monthly": 0.5, "price_hourly": 0.001, "available": False, "regions": [],
     "description": "Legacy"},
]

IMAGES = [
    {"id": 170000001, "name": "12 x64", "distribution": "Debian", "slug": "debian-12-x64",
     "public": True, "regions": ALL_REGIONS, "type": "base", "min_disk_size": 10,
     "size_gigabytes": 0.9, "status": "available", "created_at": "2025-06-10T12:00:00Z"},
    {"id": 190000002, "name": "13 x64", "distribution": "Debian", "slug": "debian-13-x64",
     "public": True, "regions": ALL_REGIONS, "type": "base", "min_disk_size": 10,
     "size_gigabytes": 1.1, "status": "available", "created_at": "2025-08-20T12:00:00Z"},
    {"id": 180000003, "name": "24.04 (LTS) x64", "distribution": "Ubuntu",
     "slug": "ubuntu-24-04-x64", "public": True, "regions": ALL_REGIONS, "type": "base",
     "min_disk_size": 10, "size_gigabytes": 2.4, "status": "available",
     "created_at": "2025-04-01T12:00:00Z"},
    {"id": 160000004, "name": "41 x64", "distribution": "Fedora", "slug": "fedora-41-x64",
     "public": True, "regions": ALL_REGIONS, "type": "base", "min_disk_size": 10,
     "size_gigabytes": 1.5, "status": "available", "created_at": "2024-11-01T12:00:00Z"},
]

SSH_KEYS = [
    {"id": 512189, "name": "laptop",
     "fingerprint": "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa",
     "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyMaterialOnlyForTests laptop"},
]

UNAUTHORIZED = {"id": "Unauthorized", "message": "Unable to authenticate you"}
NOT_FOUND = {"id": "not_found", "message": "The resource you were accessing could not be found."}


class FakeDigitalOcean:
    def __init__(self, token: str, ip: str = "127.0.0.1", polls_until_active: int = 2,
                 max_per_page: int = MAX_PER_PAGE, droplet_limit: int = 10):
        self.token = token
        self.ip = ip
        self.polls_until_active = polls_until_active
        self.max_per_page = max_per_page  # a test may make pages shorter to force paging
        self.droplet_limit = droplet_limit
        self.images = [dict(i) for i in IMAGES]
        self.sizes = [dict(s) for s in SIZES]
        self.droplets: dict[int, dict] = {}
        self.lingering: dict[int, int] = {}  # deleted id -> listings it still shows up in
        self.locked_deletes: dict[int, int] = {}  # id -> DELETEs refused while locked
        self.failures: list[tuple[str, str, int, dict, dict, bool]] = []
        self.requests: list[tuple[str, str]] = []
        self.queries: list[tuple[str, str, dict]] = []
        self.created_bodies: list[dict] = []
        self.on_create: Callable[[int, dict], None] | None = None
        self.on_delete: Callable[[int], None] | None = None
        self.lock = threading.Lock()
        self._next_id = 3164444
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeDigitalOcean:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- test helpers -----------------------------------------------------------------

    def fail_next(self, method: str, path: str, status: int, headers: dict | None = None,
                  body: dict | None = None) -> None:
        """The next request matching method and path prefix gets this answer instead."""
        self.failures.append((method, path, status, headers or {}, body or {
            "id": "server_error" if status >= 500 else "error",
            "message": "Unexpected server-side error"}, False))

    def rate_limit_next(self, method: str, path: str, reset_in: float) -> None:
        """A 429 as the real API sends it: no Retry-After, only the rate-limit headers."""
        self.failures.append((method, path, 429, {
            "ratelimit-remaining": "0", "ratelimit-reset": str(int(time.time() + reset_in))},
            {"id": "too_many_requests", "message": "API Rate limit exceeded."}, False))

    def create_then_fail(self, status: int = 500) -> None:
        """The next POST /v2/droplets creates the droplet, then answers `status` anyway."""
        self.failures.append(("POST", "/v2/droplets", status, {}, {
            "id": "server_error", "message": "Unexpected server-side error"}, True))

    def lock_deletes(self, droplet_id: int, refusals: int) -> None:
        """Keep the droplet locked (as during an action) for this many DELETE attempts."""
        self.locked_deletes[droplet_id] = refusals
        self.droplets[droplet_id]["locked"] = True

    def add_droplet(self, tag: str, created_at: datetime | None = None, size: str = "s-1vcpu-1gb",
                    status: str = "active", name: str | None = None) -> dict:
        with self.lock:
            return self._new_droplet({"name": name or f"existing-{self._next_id}",
                                      "region": "fra1", "size": size, "image": "debian-12-x64",
                                      "tags": [tag]}, created_at, status)

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def live_ids(self, tag: str | None = None) -> list[int]:
        return [i for i, d in self.droplets.items()
                if i not in self.lingering and (tag is None or tag in d["tags"])]

    # ---- behaviour --------------------------------------------------------------------

    def _new_droplet(self, body: dict, created_at: datetime | None, status: str) -> dict:
        droplet_id = self._next_id
        self._next_id += 1
        size = next(s for s in self.sizes if s["slug"] == body["size"])
        image = self._image(body.get("image")) or {"slug": body.get("image")}
        droplet = {
            "id": droplet_id, "name": body["name"], "memory": size["memory"],
            "vcpus": size["vcpus"], "disk": size["disk"], "locked": status == "new",
            "status": status,
            "created_at": (created_at or datetime.now(timezone.utc)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "features": [], "backup_ids": [], "snapshot_ids": [], "volume_ids": [],
            "image": dict(image), "size": dict(size), "size_slug": size["slug"],
            "networks": {"v4": [], "v6": []},
            "region": {"slug": body["region"], "name": body["region"].upper(),
                       "available": True, "features": [], "sizes": [], },
            "tags": list(body.get("tags") or []),
            "vpc_uuid": "760e09ef-dc84-11e8-981e-3cfdfeaae000",
            "_polls": 0,
        }
        if status in ("active", "off"):
            self._activate(droplet)
            droplet["status"] = status
        self.droplets[droplet_id] = droplet
        return droplet

    def _activate(self, droplet: dict) -> None:
        droplet["status"] = "active"
        droplet["locked"] = droplet["id"] in self.locked_deletes
        droplet["networks"]["v4"] = [
            {"ip_address": "10.110.0.2", "netmask": "255.255.240.0", "gateway": "<nil>",
             "type": "private"},
            {"ip_address": self.ip, "netmask": "255.255.240.0", "gateway": "203.0.113.1",
             "type": "public"},
        ]

    def _image(self, ref) -> dict | None:
        for image in self.images:
            if ref is not None and (str(ref) == str(image["id"]) or ref == image["slug"]):
                return image
        return None

    def _key_known(self, ref) -> bool:
        return any(str(ref) == str(k["id"]) or ref == k["fingerprint"] for k in SSH_KEYS)

    def _refusal(self, body: dict) -> str | None:
        """Why the specification (or the account) refuses this create request, if it does."""
        if not isinstance(body, dict):
            return "The request body must be a JSON object."
        if "names" in body:
            return "This fake creates one droplet at a time (name, not names)."
        for key in ("name", "size", "image"):
            if not body.get(key):
                return f"{key} is required"
        name = body["name"]
        if not isinstance(name, str) or len(name) > 255 or not NAME.match(name):
            return ("Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . "
                    "and -)")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or any(
                not isinstance(t, str) or len(t) > 255 or not TAG.match(t) for t in tags):
            return ("tags: Tags may contain letters, numbers, colons, dashes, and "
                    "underscores, up to 255 characters")
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str)
                                      or len(user_data.encode()) > USER_DATA_LIMIT):
            return "user_data is limited to 64 KiB of plain text"
        image = self._image(body["image"])
        if image is None or body.get("region") not in image["regions"]:
            return "You specified an invalid image for Droplet creation."
        for key in body.get("ssh_keys") or []:
            if not self._key_known(key):
                return "You specified an invalid SSH key ID or fingerprint for Droplet creation."
        size = next((s for s in self.sizes if s["slug"] == body["size"]), None)
        if size is None or not size["available"] or body.get("region") not in size["regions"]:
            return "Size is not available in this region."
        if len(self.live_ids()) >= self.droplet_limit:
            return "creating this/these droplet(s) will exceed your droplet limit"
        return None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _answer(self, status: int, body: dict | None = None, headers: dict | None = None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                limits = {"ratelimit-limit": "5000", "ratelimit-remaining": "4999",
                          "ratelimit-reset": str(int(time.time()) + 60)}
                for key, value in dict(limits, **(headers or {})).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str):
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests.append((method, url.path))
                    fake.queries.append((method, url.path, query))
                    if self.headers.get("Authorization") != f"Bearer {fake.token}":
                        return self._answer(401, UNAUTHORIZED)
                    for i, (m, prefix, status, headers, body, create) in enumerate(
                            fake.failures):
                        if m == method and url.path.startswith(prefix):
                            del fake.failures[i]
                            if create:
                                self._create(json.loads(raw or b"{}"), answer=False)
                            return self._answer(status, body, headers)
                    return self._route(method, url.path, query, raw)

            def _route(self, method, path, query, raw):
                parts = path.strip("/").split("/")
                if method == "GET" and path == "/v2/sizes":
                    return self._page("sizes", fake.sizes, path, query)
                if method == "GET" and path == "/v2/regions":
                    return self._page("regions", [
                        {"slug": r, "name": r.upper(), "available": True, "features": [],
                         "sizes": [s["slug"] for s in fake.sizes if r in s["regions"]]}
                        for r in ALL_REGIONS], path, query)
                if method == "GET" and path == "/v2/account/keys":
                    return self._page("ssh_keys", SSH_KEYS, path, query)
                if method == "GET" and path == "/v2/images":
                    images = fake.images
                    if query.get("type") == "distribution":
                        images = [i for i in images if i["type"] == "base"]
                    elif query.get("type") == "application":
                        images = []
                    return self._page("images", images, path, query)
                if method == "GET" and len(parts) == 3 and parts[:2] == ["v2", "images"]:
                    image = fake._image(parts[2])
                    if image is None:
                        return self._answer(404, NOT_FOUND)
                    return self._answer(200, {"image": image})
                if method == "GET" and path == "/v2/droplets":
                    return self._list(path, query)
                if method == "POST" and path == "/v2/droplets":
                    if "json" not in (self.headers.get("Content-Type") or ""):
                        return self._answer(415, {"id": "unsupported_media_type",
                                                  "message": "Content-Type must be JSON"})
                    try:
                        body = json.loads(raw or b"{}")
                    except ValueError:
                        return self._answer(400, {"id": "bad_request",
                                                  "message": "unexpected end of JSON input"})
                    return self._create(body)
                if len(parts) == 3 and parts[:2] == ["v2", "droplets"] and parts[2].isdigit():
                    droplet = fake.droplets.get(int(parts[2]))
                    if droplet is None or int(parts[2]) in fake.lingering:
                        return self._answer(404, NOT_FOUND)
                    if method == "GET":
                        droplet["_polls"] += 1
                        if droplet["status"] == "new" and \
                                droplet["_polls"] >= fake.polls_until_active:
                            fake._activate(droplet)
                        return self._answer(200, {"droplet": _public(droplet)})
                    if method == "DELETE":
                        refusals = fake.locked_deletes.get(droplet["id"], 0)
                        if refusals > 0:
                            fake.locked_deletes[droplet["id"]] = refusals - 1
                            if refusals == 1:
                                droplet["locked"] = False
                            return self._answer(422, {
                                "id": "unprocessable_entity",
                                "message": "Droplet is currently locked; try again once "
                                           "the action in progress is done."})
                        fake.lingering[droplet["id"]] = 1
                        if fake.on_delete:
                            fake.on_delete(droplet["id"])
                        return self._answer(204)
                return self._answer(404, NOT_FOUND)

            def _list(self, path, query):
                tag, name = query.get("tag_name"), query.get("name")
                if tag and name:
                    return self._answer(400, {"id": "bad_request",
                                              "message": "tag_name cannot be combined with "
                                                         "name or type"})
                listed = [d for _id, d in sorted(fake.droplets.items())
                          if (not tag or tag in d["tags"])
                          and (not name or d["name"].lower() == name.lower())]
                if query.get("page", "1") == "1":
                    for droplet_id in list(fake.lingering):
                        fake.lingering[droplet_id] -= 1
                        if fake.lingering[droplet_id] < 0:
                            del fake.lingering[droplet_id]
                            del fake.droplets[droplet_id]
                return self._page("droplets", listed, path, query)

            def _create(self, body, answer: bool = True):
                refusal = fake._refusal(body)
                if refusal:
                    return self._answer(422, {"id": "unprocessable_entity",
                                              "message": refusal}) if answer else None
                fake.created_bodies.append(body)
                droplet = fake._new_droplet(body, None, "new")
                if fake.on_create:
                    fake.on_create(droplet["id"], body)
                if not answer:
                    return None
                return self._answer(202, {
                    "droplet": _public(droplet),
                    "links": {"actions": [{"id": 7515, "rel": "create",
                                           "href": f"{fake.url}/v2/actions/7515"}]},
                })

            def _page(self, key, items, path, query):
                try:
                    per_page = int(query.get("per_page", 20))
                    page = int(query.get("page", 1))
                except ValueError:
                    return self._answer(400, {"id": "bad_request",
                                              "message": "page and per_page are numbers"})
                if per_page < 1 or page < 1:
                    return self._answer(400, {"id": "bad_request",
                                              "message": "page and per_page start at 1"})
                per_page = min(per_page, MAX_PER_PAGE, fake.max_per_page)
                total = len(items)
                last = max(1, -(-total // per_page))
                chunk = items[(page - 1) * per_page: page * per_page]
                base = {k: v for k, v in query.items() if k not in ("page", "per_page")}

                def link(n):
                    return f"{fake.url}{path}?{urlencode(dict(base, page=n, per_page=per_page))}"

                pages = {}
                if page > 1:
                    pages.update(first=link(1), prev=link(page - 1))
                if page < last:
                    pages.update(next=link(page + 1), last=link(last))
                links = {"pages": pages} if pages else {}  # one page: `links: {}`
                return self._answer(200, {key: [_public(i) for i in chunk],
                                          "links": links, "meta": {"total": total}})

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_DELETE(self):
                self._dispatch("DELETE")

        return Handler


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}
