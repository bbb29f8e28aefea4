"""Static assets: the tracking script and the demo shop, loaded once and served with an
ETag and gzip."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from .http import json_response

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def find_static_dir() -> Traversable:
    """The package's own `collector/static/`, wherever the collector is installed: a
    checkout, a wheel, the Docker image (package data, read through importlib.resources)."""
    return files("collector") / "static"


def _walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """Every file under `folder` with its path relative to it, in name order."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        elif entry.is_file():
            yield prefix + entry.name, entry


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


class Assets:
    """The tracking script (`{web_path}.js`) and, with COLLECTOR_DEMO, the demo shop.

    `missing` says, one line each, what was looked for and not found, for the start-up
    banner: the collector still runs without them (events over HTTP need neither)."""

    def __init__(self, settings: Settings) -> None:
        self.web_path = settings.web_path
        self.static_dir: Traversable = (
            Path(settings.static_dir) if settings.static_dir else find_static_dir()
        )
        self.missing: list[str] = []
        self.script = self._load_script()
        self.demo = self._load_demo() if settings.demo else {}

    def _load_script(self) -> Asset | None:
        path = self.static_dir / "y.js"
        if not path.is_file():
            self.missing.append(
                f"no tracking script: {path} is missing ({self.web_path}.js answers 404);"
                " set COLLECTOR_STATIC_DIR to a folder holding y.js"
            )
            return None
        return Asset.of(path.read_bytes(), "text/javascript; charset=utf-8")

    def _load_demo(self) -> dict[str, Asset]:
        """The demo shop's files, with the script and endpoint paths filled in."""
        root = self.static_dir / "demo"
        pages: dict[str, Asset] = {}
        if root.is_dir():
            for name, path in _walk(root):
                media_type = _MEDIA_TYPES.get(PurePosixPath(name).suffix)
                if media_type is None:
                    continue
                body = path.read_bytes()
                if name.endswith(".html"):
                    body = body.replace(b"__YC_SCRIPT__", self.web_path.encode() + b".js")
                    body = body.replace(b"__YC_ENDPOINT__", self.web_path.encode())
                pages[name] = Asset.of(body, media_type)
        if "index.html" not in pages:
            self.missing.append(
                f"no demo shop: COLLECTOR_DEMO is on but {root / 'index.html'} is missing"
            )
            return {}
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
