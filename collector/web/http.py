"""Bodies in, JSON out, and the one mapping from a refused request to its reply.

Each source words its refusals in one `ErrorForm`: Yespo's compatible endpoints as Yespo
does (`message`, Basic auth), the collector's own endpoints as `error` with a Bearer key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
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
