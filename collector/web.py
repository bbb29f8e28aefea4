"""Browsers: the tracking script, its endpoint, anonymous visitors, the demo shop.

The endpoint (``POST {web_path}``) takes ``{"siteKey", "anonymousId"?, "batch": [events]}``
as JSON or ``text/plain`` (a "simple" request: no CORS preflight, and what `sendBeacon`
sends). Site keys are public, so each is tied to the origins allowed to use it, and CORS
is answered for those origins only.

One request is one visitor: `anonymousId` from the body, else the first-party cookie,
else a new one; the reply sets or refreshes the cookie. What becomes of the events of a
visitor who has not identified yet is `collector.visitors`' business.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from .config import Settings
from .errors import BadRequest, Forbidden, PayloadTooLarge, RequestError
from .ingest import Counters, id_factory, json_response, parse_json, read_body
from .metrics import Metrics
from .spool import Spool
from .visitors import Visitors

log = logging.getLogger("collector.web")

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


def find_static_dir() -> Path:
    """`static/` of a checkout (or of the Docker image's working directory)."""
    beside_package = Path(__file__).resolve().parent.parent / "static"
    return beside_package if beside_package.is_dir() else Path.cwd() / "static"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> Asset:
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        return cls(body, gzip.compress(body, 9, mtime=0), etag, media_type)

    def response(self, request: Request, max_age: int) -> Response:
        headers = {"ETag": self.etag, "Cache-Control": f"public, max-age={max_age}"}
        headers["Vary"] = "Accept-Encoding"
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def request_origin(request: Request) -> str | None:
    """The page's origin: the Origin header, else the Referer's scheme and host."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return origin.rstrip("/")
    referer = request.headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def origin_allowed(origin: str, allowed: tuple[str, ...], request: Request) -> bool:
    for entry in allowed:
        if entry == "*" or entry == origin:
            return True
        # "self": the collector's own host (the scheme may differ behind a TLS proxy).
        if entry == "self" and urlsplit(origin).netloc == request.headers.get("host"):
            return True
    return False


class Web:
    """The browser endpoints, bound to one spool."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.sites = settings.site_origins()
        self._new_id = id_factory()
        self.static_dir = Path(settings.static_dir) if settings.static_dir else find_static_dir()
        self.script = self._load_script()
        self.demo = self._load_demo() if settings.demo else {}
        self._counters = Counters(metrics, "web")
        self.visitors = Visitors(settings, spool, metrics, self._counters, on_append)

    def flush_counters(self) -> None:
        self._counters.flush()

    # -- files ---------------------------------------------------------------------------

    def _load_script(self) -> Asset | None:
        path = self.static_dir / "y.js"
        if not path.is_file():
            log.warning("no tracking script at %s: set COLLECTOR_STATIC_DIR", path)
            return None
        return Asset.of(path.read_bytes(), "text/javascript; charset=utf-8")

    def _load_demo(self) -> dict[str, Asset]:
        """The demo shop's files, with the script and endpoint paths filled in."""
        root = self.static_dir / "demo"
        pages: dict[str, Asset] = {}
        if not root.is_dir():
            log.warning("COLLECTOR_DEMO is on but %s is missing", root)
            return pages
        types = {
            ".html": "text/html; charset=utf-8",
            ".css": "text/css; charset=utf-8",
            ".js": "text/javascript; charset=utf-8",
            ".svg": "image/svg+xml",
            ".png": "image/png",
        }
        for path in sorted(root.rglob("*")):
            media_type = types.get(path.suffix)
            if media_type is None or not path.is_file():
                continue
            body = path.read_bytes()
            if path.suffix == ".html":
                body = body.replace(b"__YC_SCRIPT__", self.settings.web_path.encode() + b".js")
                body = body.replace(b"__YC_ENDPOINT__", self.settings.web_path.encode())
            pages[path.relative_to(root).as_posix()] = Asset.of(body, media_type)
        return pages

    async def serve_script(self, request: Request) -> Response:
        if self.script is None:
            return json_response({"error": "the tracking script is not installed here"}, 404)
        # Short: a new release reaches pages within minutes; the ETag makes revisits cheap.
        return self.script.response(request, 300)

    async def serve_demo(self, request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        asset = self.demo.get(name)
        if asset is None:
            return json_response({"error": f"no demo page {name!r}"}, 404)
        return asset.response(request, 0)

    # -- CORS ----------------------------------------------------------------------------

    def _allowed_anywhere(self, origin: str, request: Request) -> bool:
        return any(origin_allowed(origin, o, request) for o in self.sites.values())

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
        origin = request_origin(request)
        if origin is None or not self._allowed_anywhere(origin, request):
            return Response(status_code=403)
        headers = self._cors(origin)
        headers["Access-Control-Allow-Methods"] = "POST"
        headers["Access-Control-Allow-Headers"] = "Content-Type"
        headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
        return Response(status_code=204, headers=headers)

    # -- the endpoint --------------------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """POST {web_path}: a batch of one visitor's events from the tracking script."""
        origin = request_origin(request)
        allowed: str | None = None
        try:
            data = parse_json(await read_body(request, MAX_WEB_BODY_BYTES))
            site_key, batch, given_id = self._envelope(data)
            origins = self.sites.get(site_key)
            if origins is None:
                raise Forbidden(f"unknown site key {site_key!r}")
            if origin is None:
                raise Forbidden("no Origin or Referer: browsers send one, so this is not a page")
            if not origin_allowed(origin, origins, request):
                raise Forbidden(f"site key {site_key!r} is not allowed on {origin}")
            allowed = origin
            anonymous_id = given_id or self._cookie_id(request) or self._new_visitor_id()
            self._counters.received += len(batch)
            reply = await self.visitors.take(batch, anonymous_id)
        except RequestError as exc:
            self.metrics.refused_requests.labels("web", str(exc.status_code)).inc()
            # A page of a known site must see the refusal (the script then gives up on the
            # batch); without CORS headers it would look like a network error, resent
            # forever.
            if allowed is None and origin is not None and self._allowed_anywhere(origin, request):
                allowed = origin
            return json_response({"error": exc.message}, exc.status_code, self._cors(allowed))
        response = json_response(reply, 200 if reply["accepted"] else 400, self._cors(allowed))
        response.set_cookie(
            self.settings.visitor_cookie,
            anonymous_id,
            max_age=COOKIE_MAX_AGE_S,
            domain=self.settings.cookie_domain,
            secure=origin.startswith("https:"),
            samesite="lax",
        )
        return response

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
