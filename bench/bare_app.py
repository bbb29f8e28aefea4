"""The baseline for bench/ingest.py: a bare Starlette endpoint that reads the body and
answers 204, and nothing else (no auth, no parsing, no spool).

Served exactly like the collector (uvicorn, one worker, "auto" loop and http, so uvloop +
httptools), it is the ceiling the collector's single-event figure is compared with:

    .venv/bin/python -m uvicorn bench.bare_app:app --port P --log-level warning --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def events(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        # Same path as the collector, so wrk sends byte-identical requests to both.
        Route("/v1/events", events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
