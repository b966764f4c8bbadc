"""The web forms' rate gate: per-client limits applied before routing.

A flood of submissions is answered 429 here, before FastAPI routes the
request or anything reads its body, with a response prepared once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from emaild.app import App
from emaild.webform import page
from emaild.webform.guard import RateLimiter, ReplayGuard, client_address

log = structlog.get_logger("emaild.webform")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


@dataclass
class WebState:
    """What the defences remember between requests (this process only)."""

    limiter: RateLimiter = field(default_factory=RateLimiter)
    replays: ReplayGuard = field(default_factory=ReplayGuard)


class RateGate:
    """The per-client rate limits, before routing: a flood costs little.

    ``POST /web-to-case/NAME`` over the form's limit is answered 429 here,
    without reading the body, without a log line each (debug level). New
    challenges (``GET .../challenge``) have their own bucket, three times as
    large: a page load, a reload, an expired challenge renewed.
    """

    def __init__(self, app: ASGIApp, emaild: App, state: WebState) -> None:
        self.app = app
        self.emaild = emaild
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        method = scope.get("method")
        name = path.removeprefix("/web-to-case/")
        key, factor = name, 1
        if method == "GET" and name.endswith("/challenge"):
            name = name.removesuffix("/challenge")
            key, factor = f"{name}/challenge", 3
        elif method != "POST":
            name = ""
        form = next((f for f in self.emaild.config.webform if f.name == name), None)
        if not path.startswith("/web-to-case/") or form is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        peer = (scope.get("client") or ("", 0))[0]
        trusted = self.emaild.config.web.trusted_proxies
        client = client_address(peer, headers.get("x-forwarded-for"), trusted)
        wait = self.state.limiter.allow(
            key, client, form.rate_burst * factor, form.rate_per_minute * factor
        )
        if not wait:
            await self.app(scope, receive, send)
            return
        log.debug("webform.refused", form=name, status=429, defence="rate", client=client)
        retry = str(max(1, int(wait + 0.999))).encode()
        accept = headers.get("accept", "").lower()
        if "application/json" in accept and "text/html" not in accept:
            body, kind = _RATE_JSON, b"application/problem+json"
        else:
            body, kind = _RATE_HTML, b"text/html; charset=utf-8"
        # Straight to the server, without a Response object: the cheapest answer.
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", kind),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", retry),
                    *_RAW_SECURITY,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_RATE_DETAIL = "too many submissions: try again later"
_RATE_JSON = json.dumps(
    {"type": "about:blank", "title": "Too Many Requests", "status": 429, "detail": _RATE_DETAIL}
).encode()
_RATE_HTML = page.error_page(429, _RATE_DETAIL, None).encode()
_RAW_SECURITY = [
    *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
    (b"content-security-policy", page.csp([]).encode()),
]
