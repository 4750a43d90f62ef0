"""The console (SPEC 7.4): pages people open on a desk or a phone, server-rendered with
Jinja2 and htmx, and every asset they load served from this package (`static/`, the
vendored files under `static/vendor/` with their licenses, from scripts/vendor.sh):
nothing comes from a CDN, so the console and `/docs` work offline and where CDNs are
blocked.

`mount(app)` adds the pages (api/console/pages.py), the static files and the API's own
Swagger UI at `/docs`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
SWAGGER = "/static/vendor/swagger-ui-dist"


def mount(app: FastAPI) -> None:
    """Serve the pages, `static/` at /static and Swagger UI from it at /docs (FastAPI's
    own /docs and /redoc load theirs from a CDN, so the app is made without them)."""
    from api.console import pages

    app.include_router(pages.router)

    async def refused(_request: Request, exc: Exception) -> Response:
        """A console request refused before its work (pages.Refused)."""
        assert isinstance(exc, pages.Refused)
        return exc.response

    app.add_exception_handler(pages.Refused, refused)
    app.add_middleware(PagesGzip)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png")


class PagesGzip:
    """gzip for the pages and their files (a phone on a weak link loads a third of the
    bytes), never for the API: its streams (the NC register, the feed's long poll) go out
    as they are written."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/api/"):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
