"""A faithful stand-in for the DigitalOcean API v2 endpoints `livestream cloud` uses.

Served on 127.0.0.1 by the tests. It behaves like the real API where we depend on it:
Bearer-token authentication (401 with DigitalOcean's error body), 202 on droplet create with
status "new" that turns "active" after a few polls and only then gets networks.v4, 204 on
delete (the droplet lingers in listings for a moment, as real deletions are asynchronous),
tag filtering, page/per_page pagination with links.pages and meta.total, 404 for unknown
droplets, 422 for a size not offered in the region or a reached droplet limit, rate-limit
headers on every answer, and scripted one-off failures (429 with Retry-After, 5xx).
`on_create(droplet_id, body)` and `on_delete(droplet_id)`, when set, let a test boot and
stop what the droplet would run (see fake_droplet.py).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

SIZES = [
    # a cheaper size that is NOT offered in fra1: "cheapest" must skip it there
    {"slug": "s-1vcpu-512mb-10gb", "price_hourly": 0.00595, "price_monthly": 4.0,
     "regions": ["nyc1", "sfo3"], "available": True, "transfer": 0.5},
    {"slug": "s-1vcpu-1gb", "price_hourly": 0.00893, "price_monthly": 6.0,
     "regions": ["fra1", "nyc1", "sfo3"], "available": True, "transfer": 1.0},
    {"slug": "s-1vcpu-2gb", "price_hourly": 0.01786, "price_monthly": 12.0,
     "regions": ["fra1", "nyc1"], "available": True, "transfer": 2.0},
    {"slug": "s-2vcpu-2gb", "price_hourly": 0.02679, "price_monthly": 18.0,
     "regions": ["fra1"], "available": True, "transfer": 3.0},
    {"slug": "s-1vcpu-512mb-old", "price_hourly": 0.001, "price_monthly": 0.5,
     "regions": ["fra1"], "available": False, "transfer": 0.5},
]


class FakeDigitalOcean:
    def __init__(self, token: str, ip: str = "127.0.0.1", polls_until_active: int = 2,
                 max_per_page: int = 2, droplet_limit: int = 10):
        self.token = token
        self.ip = ip
        self.polls_until_active = polls_until_active
        self.max_per_page = max_per_page  # smaller than clients ask for: forces paging
        self.droplet_limit = droplet_limit
        self.droplets: dict[int, dict] = {}
        self.lingering: dict[int, int] = {}  # deleted id -> listings it still shows up in
        self.failures: list[tuple[str, str, int, dict, dict]] = []
        self.requests: list[tuple[str, str]] = []
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
            "id": "error", "message": "scripted failure"}))

    def add_droplet(self, tag: str, created_at: datetime | None = None, size: str = "s-1vcpu-1gb",
                    status: str = "active") -> dict:
        with self.lock:
            return self._new_droplet({"name": f"existing-{self._next_id}", "region": "fra1",
                                      "size": size, "tags": [tag]}, created_at, status)

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    def live_ids(self, tag: str | None = None) -> list[int]:
        return [i for i, d in self.droplets.items()
                if i not in self.lingering and (tag is None or tag in d["tags"])]

    # ---- behaviour --------------------------------------------------------------------

    def _new_droplet(self, body: dict, created_at: datetime | None, status: str) -> dict:
        droplet_id = self._next_id
        self._next_id += 1
        size = next(s for s in SIZES if s["slug"] == body["size"])
        droplet = {
            "id": droplet_id, "name": body["name"], "memory": 1024, "vcpus": 1, "disk": 25,
            "locked": False, "status": status,
            "created_at": (created_at or datetime.now(timezone.utc)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"),
            "features": [], "backup_ids": [], "snapshot_ids": [],
            "image": {"slug": body.get("image", "debian-12-x64")},
            "size": dict(size), "size_slug": size["slug"],
            "networks": {"v4": [], "v6": []},
            "region": {"slug": body["region"], "name": body["region"].upper()},
            "tags": list(body.get("tags") or []), "vpc_uuid": "00000000-0000-0000-0000-0000",
            "_polls": 0,
        }
        if status == "active":
            self._activate(droplet)
        self.droplets[droplet_id] = droplet
        return droplet

    def _activate(self, droplet: dict) -> None:
        droplet["status"] = "active"
        droplet["networks"]["v4"] = [
            {"ip_address": "10.110.0.2", "netmask": "255.255.240.0", "gateway": "<nil>",
             "type": "private"},
            {"ip_address": self.ip, "netmask": "255.255.240.0", "gateway": "203.0.113.1",
             "type": "public"},
        ]

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
                # DigitalOcean sends these on every answer; reset is a Unix time
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
                    if self.headers.get("Authorization") != f"Bearer {fake.token}":
                        return self._answer(401, {"id": "Unauthorized",
                                                  "message": "Unable to authenticate you"})
                    for i, (m, prefix, status, headers, body) in enumerate(fake.failures):
                        if m == method and url.path.startswith(prefix):
                            del fake.failures[i]
                            return self._answer(status, body, headers)
                    return self._route(method, url.path, query, raw)

            def _route(self, method, path, query, raw):
                parts = path.strip("/").split("/")
                if method == "GET" and path == "/v2/sizes":
                    return self._page("sizes", SIZES, path, query)
                if method == "GET" and path == "/v2/droplets":
                    tag = query.get("tag_name")
                    listed = []
                    for _id, d in sorted(fake.droplets.items()):
                        if tag and tag not in d["tags"]:
                            continue
                        listed.append(d)
                    for droplet_id in list(fake.lingering) if query.get("page", "1") == "1" \
                            else []:
                        fake.lingering[droplet_id] -= 1
                        if fake.lingering[droplet_id] < 0:
                            del fake.lingering[droplet_id]
                            del fake.droplets[droplet_id]
                    return self._page("droplets", listed, path, query)
                if method == "POST" and path == "/v2/droplets":
                    return self._create(json.loads(raw or b"{}"))
                if len(parts) == 3 and parts[:2] == ["v2", "droplets"] and parts[2].isdigit():
                    droplet = fake.droplets.get(int(parts[2]))
                    if droplet is None or int(parts[2]) in fake.lingering:
                        return self._answer(404, {
                            "id": "not_found",
                            "message": "The resource you were accessing could not be found."})
                    if method == "GET":
                        droplet["_polls"] += 1
                        if droplet["status"] == "new" and \
                                droplet["_polls"] >= fake.polls_until_active:
                            fake._activate(droplet)
                        return self._answer(200, {"droplet": _public(droplet)})
                    if method == "DELETE":
                        fake.lingering[droplet["id"]] = 1
                        if fake.on_delete:
                            fake.on_delete(droplet["id"])
                        return self._answer(204)
                return self._answer(404, {"id": "not_found",
                                          "message": "The resource you requested could not be "
                                                     "found."})

            def _create(self, body):
                missing = [k for k in ("name", "region", "size", "image") if not body.get(k)]
                if missing:
                    return self._answer(422, {"id": "unprocessable_entity",
                                              "message": f"{missing[0]} is required"})
                size = next((s for s in SIZES if s["slug"] == body["size"]), None)
                if size is None or body["region"] not in size["regions"]:
                    return self._answer(422, {"id": "unprocessable_entity",
                                              "message": "Size is not available in this region."})
                if len(fake.live_ids()) >= fake.droplet_limit:
                    return self._answer(422, {
                        "id": "unprocessable_entity",
                        "message": "creating this/these droplet(s) will exceed your droplet "
                                   "limit"})
                fake.created_bodies.append(body)
                droplet = fake._new_droplet(body, None, "new")
                if fake.on_create:
                    fake.on_create(droplet["id"], body)
                return self._answer(202, {
                    "droplet": _public(droplet),
                    "links": {"actions": [{"id": 7515, "rel": "create",
                                           "href": f"{fake.url}/v2/actions/7515"}]},
                })

            def _page(self, key, items, path, query):
                per_page = min(int(query.get("per_page", 20)), fake.max_per_page)
                page = int(query.get("page", 1))
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
                return self._answer(200, {key: [_public(i) for i in chunk],
                                          "links": {"pages": pages}, "meta": {"total": total}})

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_DELETE(self):
                self._dispatch("DELETE")

        return Handler


def _public(item: dict) -> dict:
    return {k: v for k, v in item.items() if not k.startswith("_")}
