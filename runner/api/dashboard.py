"""The dashboard page at `/`: static HTML, JS and CSS shipped in the package (runner/api/static/).

The page and its two assets are keyless (auth.OPEN_PATHS): they hold no data. Every data call the
page makes (/v1/batches, file content) carries the key the user typed, kept in sessionStorage, so
an owner sees only their own batches. The Content-Security-Policy lets the page run only its own
script and fetch only from this origin: a server string that slipped into markup could not run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# path -> (file under static/, media type)
ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
PATHS = tuple(ASSETS)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Revalidate each load, so an upgraded server never runs against an old cached script.
    "cache-control": "no-cache",
}


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("runner.api").joinpath("static", name).read_bytes()


def _endpoint(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def asset(request: Request) -> Response:
        return Response(_asset(name), media_type=media_type, headers=HEADERS)
    return asset


ROUTES = [Route(path, _endpoint(name, media_type), methods=["GET"]) for path, (name, media_type) in ASSETS.items()]
