"""Serves the dashboard: its page, its static scripts and styles, and the labels it shows.

Everything comes from this package: no CDN, no web font, so the dashboard works with no internet.
The pages call the query API with the session cookie (POST /v1/session); this router holds no data.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from services.dashboard.labels import build_labels

router = APIRouter(include_in_schema=False)

BASE: Final = "/dashboard/"
_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
# Only the hub itself: scripts, styles, images and fetches. Inline SVG is markup, not a script.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time: a new hub version must not run with yesterday's scripts.
    "Cache-Control": "no-cache",
}


@cache
def _static_files() -> dict[str, bytes]:
    """The shipped files by name; a name not in here is a 404, so no path reaches the file system."""
    root = resources.files("services.dashboard") / "static"
    files: dict[str, bytes] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif any(child.name.endswith(ext) for ext in _MEDIA_TYPES):
                files[prefix + child.name] = child.read_bytes()

    walk(root, "")
    return files


@cache
def _labels() -> bytes:
    return json.dumps(build_labels(), ensure_ascii=False).encode()


def _media_type(name: str) -> str:
    return _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]


def _not_found() -> Response:
    return Response("未找到 Not found", status_code=404, media_type="text/plain; charset=utf-8")


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    return RedirectResponse(BASE, status_code=307)


@router.api_route("/dashboard", methods=["GET", "HEAD"])
async def dashboard_no_slash() -> RedirectResponse:
    return RedirectResponse(BASE, status_code=307)


@router.api_route(BASE, methods=["GET", "HEAD"])
async def index() -> Response:
    return Response(_static_files()["index.html"], media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get(BASE + "labels.json")
async def labels() -> Response:
    return Response(_labels(), media_type=_MEDIA_TYPES[".json"], headers=_HEADERS)


@router.get(BASE + "static/{name:path}")
async def static(name: str) -> Response:
    body = _static_files().get(name)
    if body is None:
        return _not_found()
    return Response(body, media_type=_media_type(name), headers=_HEADERS)
