"""The API's requests counted for `patrol_http_requests_total`: by method, route template
and status class, so the labels stay few whatever paths clients send."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.metrics import HTTP_REQUESTS, status_class

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods counted by name; any other is `other` (a client may send any word)."""


class CountRequests:
    """ASGI middleware, outside the Door so its refusals count too (as `unmatched`: they
    never reach a route)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app raises before responding

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            HTTP_REQUESTS.labels(method, template(scope), status_class(status)).inc()


def template(scope: Scope) -> str:
    """The matched route's path template with its router's prefix (`/api/v1/...`):
    FastAPI keeps an included route's path relative to its router, so the prefix is the
    request path's leading segments that the template's own segments do not cover."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):  # a mount's files (/static) say where they were found
        return f"{scope['root_path']}/{{path}}" if scope.get("root_path") else "unmatched"
    if ":path}" in path:  # its parameter may hold slashes: the count says nothing
        return path
    parts = scope["path"].split("/")
    return "/".join(parts[:max(1, len(parts) - path.count("/"))]) + path
