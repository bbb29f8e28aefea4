"""Static assets: the tracking script and the demo shop, loaded once and served with an
ETag and gzip."""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ..config import Settings
from .http import json_response

log = logging.getLogger("collector.web")

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def find_static_dir() -> Path:
    """`static/` of a checkout (or of the Docker image's working directory)."""
    beside_package = Path(__file__).resolve().parents[2] / "static"
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


class Assets:
    """The tracking script (`{web_path}.js`) and, with COLLECTOR_DEMO, the demo shop."""

    def __init__(self, settings: Settings) -> None:
        self.web_path = settings.web_path
        self.static_dir = Path(settings.static_dir) if settings.static_dir else find_static_dir()
        self.script = self._load_script()
        self.demo = self._load_demo() if settings.demo else {}

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
        for path in sorted(root.rglob("*")):
            media_type = _MEDIA_TYPES.get(path.suffix)
            if media_type is None or not path.is_file():
                continue
            body = path.read_bytes()
            if path.suffix == ".html":
                body = body.replace(b"__YC_SCRIPT__", self.web_path.encode() + b".js")
                body = body.replace(b"__YC_ENDPOINT__", self.web_path.encode())
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
