"""Headers every response carries: nothing external, nothing framed, no referrer, no server."""
from __future__ import annotations

import secrets

from flask import Flask, g

CSP = (
    "default-src 'none'; img-src 'self' data:; media-src 'self' blob:; "
    "style-src 'self' 'nonce-{nonce}'; script-src 'self'; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'"
)


def style_nonce() -> str:
    """A per-response nonce so a page may carry one small computed <style> block."""
    if "style_nonce" not in g:
        g.style_nonce = secrets.token_urlsafe(12)
    return g.style_nonce


def init_app(app: Flask) -> None:
    app.jinja_env.globals["style_nonce"] = style_nonce

    @app.after_request
    def add_headers(response):
        response.headers["Content-Security-Policy"] = CSP.format(nonce=style_nonce())
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers.pop("Server", None)
        if "Last-Modified" in response.headers:
            # a file response: werkzeug's ETag for it embeds the file's mtime (a clock reading)
            del response.headers["Last-Modified"]
            response.headers.pop("ETag", None)
        return response
