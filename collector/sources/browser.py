"""Browsers: the tracking script, its endpoint, anonymous visitors, the demo shop.

The endpoint (``POST {web_path}``) takes ``{"siteKey", "anonymousId"?, "batch": [events]}``
as JSON or ``text/plain`` (a "simple" request: no CORS preflight, and what `sendBeacon`
sends). Site keys are public, so each is tied to the origins allowed to use it, and CORS
is answered for those origins only; each client address has a request ceiling
(`collector.web.ratelimit`), checked before the body is read.

One request is one visitor: `anonymousId` from the body, else the first-party cookie,
else a new one; the reply sets or refreshes the cookie. What becomes of the events of a
visitor who has not identified yet is `visitors`' business. The script and the demo shop
are static assets (`collector.web.static`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ..errors import (
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RequestError,
    TooManyRequests,
    Unavailable,
)
from ..web.http import OWN, error_reply, json_response, parse_json, read_body
from ..web.ratelimit import ClientAddress, RateLimiter, retry_after
from .base import Counters, Source
from .visitors import Visitors

# navigator.sendBeacon refuses bodies over 64 KB, so the script never sends more.
MAX_WEB_BODY_BYTES = 64 * 1024
# The script sends at most 20 events per request; 100 leaves room for other senders.
MAX_WEB_BATCH = 100
# An anonymousId is the script's random id (or ours): short and cookie-safe.
_ANONYMOUS_ID = re.compile(r"[A-Za-z0-9_.-]{8,100}")
# The visitor cookie lives a year; each request refreshes it.
COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Browsers cache a CORS preflight answer this long.
PREFLIGHT_MAX_AGE_S = 86400
_BODY_KEYS = frozenset({"siteKey", "anonymousId", "batch", "v", "sentAt"})


def request_origin(request: Request) -> str | None:
    """The page's origin: the Origin header, else the Referer's scheme and host; None when
    the request names neither. Raises `Forbidden` for a value that is not a URL (no
    browser sends one)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        origin = origin.rstrip("/")
        parts = _split(origin)
        if parts is None or not parts.scheme or not parts.netloc:
            raise Forbidden("the Origin header is not an origin such as https://shop.example")
        return origin
    referer = request.headers.get("referer")
    if referer:
        parts = _split(referer)
        if parts is None:
            raise Forbidden("the Referer header is not a URL")
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def _split(url: str) -> SplitResult | None:
    # urlsplit raises ValueError on some malformed hosts ("http://[::1", odd Unicode).
    try:
        return urlsplit(url)
    except ValueError:
        return None


def origin_allowed(origin: str, allowed: tuple[str, ...], request: Request) -> bool:
    for entry in allowed:
        if entry == "*" or entry == origin:
            return True
        # "self": the collector's own host (the scheme may differ behind a TLS proxy).
        if entry == "self":
            parts = _split(origin)
            if parts is not None and parts.netloc == request.headers.get("host"):
                return True
    return False


class Browser(Source):
    """The browser endpoint, bound to one spool."""

    def setup(self) -> None:
        s = self.settings
        self.sites = s.site_origins()
        self._counters = Counters(self.metrics, "web")
        self.counters = (self._counters,)
        self.visitors = Visitors(s, self.spool, self.metrics, self._counters, self._on_append)
        self.visitors.holding.journal = self.journal
        self.limiter = RateLimiter(s.web_rate, s.web_burst) if s.web_rate else None
        self.client_address = ClientAddress(s.trusted_proxies)

    # -- the ceiling per client -------------------------------------------------------------

    def _limit(self, request: Request) -> None:
        """Raises `TooManyRequests` for a client past its ceiling (before its body is read)."""
        if self.limiter is None:
            return
        peer = request.client.host if request.client else None
        client = self.client_address(peer, request.headers.get("x-forwarded-for"))
        wait = self.limiter.wait(client)
        if wait:
            seconds = retry_after(wait)
            raise TooManyRequests(
                f"too many requests from {client or 'this client'}: at most"
                f" {self.limiter.rate:g} a second and {self.limiter.burst} at once;"
                f" try again in {seconds} s",
                seconds,
            )

    # -- CORS ----------------------------------------------------------------------------

    def _allowed_anywhere(self, origin: str, request: Request) -> bool:
        return any(origin_allowed(origin, o, request) for o in self.sites.values())

    def _known_page(self, request: Request) -> str | None:
        """The page's origin when some site key allows it, so that a refusal can be read
        there; else None."""
        try:
            origin = request_origin(request)
        except Forbidden:
            return None
        return origin if origin is not None and self._allowed_anywhere(origin, request) else None

    @staticmethod
    def _cors(origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    async def preflight(self, request: Request) -> Response:
        """OPTIONS: only needed for JSON bodies; text/plain (the script's) skips it."""
        try:
            self._limit(request)
            origin = request_origin(request)
            if origin is None:
                raise Forbidden("no Origin: a CORS preflight comes from a page, which names it")
            if not self._allowed_anywhere(origin, request):
                raise Forbidden(f"no site key is allowed on {origin}")
        except RequestError as exc:
            return self._refusal(exc, request, None)
        headers = self._cors(origin)
        headers["Access-Control-Allow-Methods"] = "POST"
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        return Response(status_code=204, headers=headers)

    # -- the endpoint --------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """POST {web_path}: a batch of one visitor's events from the tracking script."""
        allowed: str | None = None
        try:
            self._limit(request)
            page = request_origin(request)
            body = await read_body(request, MAX_WEB_BODY_BYTES)
            data = parse_json(body)
            site_key, batch, given_id = self._envelope(data)
            origins = self.sites.get(site_key)
            if origins is None:
                raise Forbidden(f"unknown site key {site_key!r}")
            if page is None:
                raise Forbidden("no Origin or Referer: browsers send one, so this is not a page")
            if not origin_allowed(page, origins, request):
                raise Forbidden(f"site key {site_key!r} is not allowed on {page}")
            allowed = page
            anonymous_id = given_id or self._cookie_id(request) or self._new_visitor_id()
            self._counters.received += len(batch)
            outs: list[Any] | None = [] if self.journal.on else None
            reply = await self.visitors.take(batch, anonymous_id, outs)
        except (RequestError, Unavailable) as exc:
            return self._refusal(exc, request, allowed)
        if outs is not None:
            self.journal.ingest("browser", body, outs, 200 if reply["accepted"] else 400)
        response = json_response(reply, 200 if reply["accepted"] else 400, self._cors(allowed))
        response.set_cookie(
            self.settings.visitor_cookie,
            anonymous_id,
            max_age=COOKIE_MAX_AGE_S,
            domain=self.settings.cookie_domain,
            secure=page.startswith("https:"),
            samesite="lax",
        )
        return response

    def _refusal(
        self, exc: RequestError | Unavailable, request: Request, allowed: str | None
    ) -> Response:
        """A refusal as JSON, with CORS headers for a page some site key allows: the script
        must see it (a 429 or 503 to retry after Retry-After, a 4xx to give the batch up),
        or it looks like a network error, resent at once. Other origins get none (see
        docs/api.md)."""
        status, body, headers = error_reply(exc, OWN, self.metrics, "web")
        headers.update(self._cors(allowed or self._known_page(request)))
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        return json_response(body, status, headers)

    @staticmethod
    def _envelope(data: Any) -> tuple[str, list[Any], str | None]:
        if not isinstance(data, dict):
            raise BadRequest('body must be {"siteKey": ..., "batch": [events]}')
        unknown = sorted(k for k in data if k not in _BODY_KEYS)
        if unknown:
            raise BadRequest(f"unexpected {unknown}; the body holds siteKey, anonymousId, batch")
        site_key = data.get("siteKey")
        if not isinstance(site_key, str) or not site_key:
            raise BadRequest("'siteKey' is required: the site key given to init")
        batch = data.get("batch")
        if not isinstance(batch, list) or not batch:
            raise BadRequest("'batch' must be a non-empty array of events")
        if len(batch) > MAX_WEB_BATCH:
            raise PayloadTooLarge(
                f"batch of {len(batch)} events is over the limit of {MAX_WEB_BATCH}"
            )
        given = data.get("anonymousId")
        if given is not None and not (isinstance(given, str) and _ANONYMOUS_ID.fullmatch(given)):
            raise BadRequest("'anonymousId' must be 8-100 letters, digits, '-', '_' or '.'")
        return site_key, batch, given

    def _cookie_id(self, request: Request) -> str | None:
        value = request.cookies.get(self.settings.visitor_cookie)
        return value if value and _ANONYMOUS_ID.fullmatch(value) else None

    def _new_visitor_id(self) -> str:
        return hashlib.sha256(self._new_id().encode()).hexdigest()[:32]
