"""URLs as a log may show them: where a request went, never the key it carried.

Chat robots and many receivers put their key in the URL (DingTalk `?access_token=`, WeCom
`?key=`, Feishu and Slack in the path), and a TSDB URL may hold `user:password@`. A log
line gets `scheme://host:port` and the path's shape: the query, the user info and every
path segment that looks like a secret are left out.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

ELIDED = "***"
_PLAIN = re.compile(r"[A-Za-z][a-z_.-]{0,19}|[a-z]+(?:[A-Z][a-z]+){1,3}|[A-Za-z0-9]{1,3}")
"""Segments kept as they are: words (`api`, `open-apis`, `write`, `sendMessage`) and tiny
ones (`v2`). Anything else (digits mixed in, capitals, long, encoded) may be a key."""


def url_for_log(url: str) -> str:
    """`scheme://host:port/path/shape` of `url`, with no user info, query or secrets."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme or not host:
        return "<unparsable URL>"
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if ":" in host:
        host = f"[{host}]"
    segments = [s if not s or _PLAIN.fullmatch(s) else ELIDED for s in parts.path.split("/")]
    where = f"{parts.scheme.lower()}://{host}" + ("" if port is None else f":{port}")
    return where + "/".join(segments)


def location_host(location: str | None) -> str:
    """Where a redirect pointed (`Location`), for a log line: its origin, never its path."""
    if not location:
        return "no Location"
    if location.startswith("/") and not location.startswith("//"):
        return "a path on the same origin"
    if location.startswith("//"):
        location = "http:" + location
    shown = url_for_log(location)
    return shown if shown.startswith("<") else "/".join(shown.split("/", 3)[:3])
