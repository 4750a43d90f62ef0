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

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
SWAGGER = "/static/vendor/swagger-ui-dist"


def mount(app: FastAPI) -> None:
    """Serve the pages, `static/` at /static and Swagger UI from it at /docs (FastAPI's
    own /docs and /redoc load theirs from a CDN, so the app is made without them)."""
    from api.console import pages

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png")
