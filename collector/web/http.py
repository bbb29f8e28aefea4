"""Bodies in, JSON out, and the one mapping from a refused request to its reply.

Each source words its refusals in one `ErrorForm`: Yespo's compatible endpoints as Yespo
does (`message`, Basic auth), the collector's own endpoints as `error` with a Bearer key.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive

from ..errors import (
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    RequestError,
    SpoolFull,
    Unavailable,
)
from ..metrics import Metrics

JSON = "application/json"

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ErrorForm:
    """How a source words a refusal: the body's key, and the auth scheme a 401 asks for."""

    key: str
    auth_scheme: str


# The collector's own endpoints: {"error": ...}, Bearer keys.
OWN = ErrorForm("error", "Bearer")
# Yespo's compatible endpoints answer as Yespo does: {"message": ...}, Basic auth.
YESPO = ErrorForm("message", "Basic")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def near_miss(path: str, routes: Iterable[BaseRoute]) -> str | None:
    """The endpoint a mistyped `path` most likely meant, as "POST /v1/events"; None when
    no known path is close (difflib's ratio at least 0.8: one or two letters off)."""
    methods: dict[str, list[str]] = {}
    for route in routes:
        if isinstance(route, Route) and "{" not in route.path:
            named = [m for m in sorted(route.methods or ()) if m not in ("HEAD", "OPTIONS")]
            methods.setdefault(route.path, []).extend(named)
    close = difflib.get_close_matches(path, [p for p, m in methods.items() if m], n=1, cutoff=0.8)
    return f"{'/'.join(methods[close[0]])} {close[0]}" if close else None


async def not_found(request: Request, exc: Exception) -> Response:
    """404 in JSON like every other answer, with the endpoint a near-miss path meant."""
    message = f"no such endpoint: {request.method} {request.url.path}"
    hint = near_miss(request.url.path, request.app.routes)
    if hint is not None:
        message += f"; did you mean {hint}?"
    return json_response({"error": message}, 404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 in JSON, with the Allow header Starlette's router set (sorted: it comes from a
    set, so its order would change from run to run)."""
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    allowed = ", ".join(sorted(headers.get("Allow", "").split(", ")))
    headers["Allow"] = allowed
    message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    return json_response({"error": message}, 405, headers)


def error_reply(
    exc: RequestError | Unavailable, form: ErrorForm, metrics: Metrics, endpoint: str
) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, body and headers for a refused request, counted under `endpoint`.

    `Unavailable` is a 503 with Retry-After (nothing of the request was stored: send it
    again); a `RequestError` is its own status, a 401 naming the scheme to use."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable):
        metrics.refused_requests.labels(endpoint, "503").inc()
        stage = "overload" if isinstance(exc, Overloaded) else "spool"
        metrics.errors.labels("spool_full" if isinstance(exc, SpoolFull) else stage).inc()
        headers["Retry-After"] = str(exc.retry_after)
        return 503, {form.key: f"events not stored, try again later: {exc.message}"}, headers
    metrics.refused_requests.labels(endpoint, str(exc.status_code)).inc()
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = f'{form.auth_scheme} realm="collector"'
    return exc.status_code, {form.key: exc.message}, headers


def refusing(form: ErrorForm, metrics: Metrics, endpoint: Endpoint) -> Endpoint:
    """`endpoint`, with the collector's errors it raises answered in the source's form."""

    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except (RequestError, Unavailable) as exc:
            status, body, headers = error_reply(exc, form, metrics, request.url.path)
            return json_response(body, status, headers)

    return handle


async def read_body(request: Request, limit: int) -> bytes:
    """`receive_body` for a Starlette request."""
    declared = request.headers.get("content-length")
    body = await receive_body(request.receive, declared.encode() if declared else None, limit)
    if body is None:
        raise ClientDisconnect()
    return body


async def receive_body(receive: Receive, declared: bytes | None, limit: int) -> bytes | None:
    """The body from ASGI messages, refused with 413 as soon as it passes `limit` bytes;
    None if the client disconnected first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared.decode()} bytes is over the limit of {limit} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        if not message.get("more_body", False):
            return chunk if not chunks else b"".join([*chunks, chunk])
        chunks.append(chunk)


def parse_json(body: bytes) -> Any:
    if not body:
        raise BadRequest("body is empty: expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
