"""The web app's static files, served at `/`.

The app (web/, built into web/dist by `make web`) is a client of the public `/v1` API
and nothing else; the build also makes the API's reference page, served at `/docs`.
Its deep links (`/folders/<id>`, `/files/<id>`, `/datasets`, `/datasets/<id>`,
`/search`, `/trash`) answer its index page, which then reads the address; so does any other
address a browser opens outside `/v1` (with 404: the app shows its "Page not found").
Hashed assets are
cached for a year; the index is revalidated each time. A precompressed `.gz` beside an
asset (the build writes them) is sent to a browser that accepts gzip.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from shared.kit.http import JSON, error_body
from shared.kit.settings import Settings

SOURCE_BUILD = Path(__file__).resolve().parents[2] / "web" / "dist"
ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
APP_PATHS = (
    "/",
    "/folders/{folder_id}",
    "/files/{file_id}",
    "/datasets",
    "/datasets/{dataset_id}",
    "/search",
    "/trash",
)
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

# The app loads its own scripts and styles only. Media and images may come from a
# presigned URL of the customer's bucket (a file imported by reference answers 307).
POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https: http:",
        "media-src 'self' blob: https: http:",
        "frame-src 'self' blob:",
        "object-src 'none'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def install(app: FastAPI, settings: Settings) -> None:
    root = Path(settings.web_dir) if settings.web_dir else SOURCE_BUILD

    def page(status: int, name: str = "index.html") -> Response:
        index = root / name
        if not index.is_file():
            return JSON(
                error_body("web_app_not_built", f"the web app is not built in {root}: make web"),
                503,
            )
        return FileResponse(index, status, media_type="text/html", headers=PAGE_HEADERS)

    async def app_page() -> Response:  # no parameters: nothing of the query is read
        return page(200)

    for path in APP_PATHS:
        app.add_api_route(path, app_page, methods=["GET", "HEAD"], include_in_schema=False)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        """The API's reference: Swagger UI, built with the app from a pinned package
        (web/docs.html) and served from here under the app's policy, so no script of
        another origin runs where the session cookie is."""
        return page(200, "docs.html")

    async def elsewhere(request: Request) -> Response:
        """No route: a browser's page load gets the app (which says "Page not found"),
        anything else the JSON 404 it always had, or 405 where a route has the path but
        not the method."""
        allowed = sorted(
            {
                method
                for r in app.router.routes
                if r is not fallback and r.matches(request.scope)[0] is Match.PARTIAL
                for method in getattr(r, "methods", None) or ()
            }
        )
        if allowed:
            raise HTTPException(405, headers={"Allow": ", ".join(allowed)})
        if request.method not in ("GET", "HEAD"):
            raise HTTPException(404)
        if "text/html" not in request.headers.get("accept", ""):
            raise HTTPException(404)
        return page(404)

    @app.get("/assets/{name}", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        # One flat directory of hashed names: no separators, no dot-files, no traversal.
        if not ASSET.fullmatch(name) or ".." in name:
            return JSON(error_body("not_found", "no such asset"), 404)
        found = root / "assets" / name
        if not found.is_file():
            return JSON(error_body("not_found", "no such asset"), 404)
        headers = {
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        }
        media_type = TYPES.get(found.suffix)
        packed = found.with_name(found.name + ".gz")
        if "gzip" in request.headers.get("accept-encoding", "") and packed.is_file():
            headers["Content-Encoding"] = "gzip"
            return FileResponse(packed, media_type=media_type, headers=headers)
        return FileResponse(found, media_type=media_type, headers=headers)

    # Last of the web's routes. Every path but `/v1` and below: the API's own 404s, routed
    # after this.
    # Every method (a function's route would take only GET and HEAD: any other would be
    # a 405 of the router's for every path).
    fallback = Route(
        "/{rest:path}", elsewhere, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    )
    fallback.path_regex = re.compile(r"^/(?!v1(?:/|$))(?P<rest>.*)$")
    app.router.routes.append(fallback)
