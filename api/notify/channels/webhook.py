"""A webhook channel: the format's request POSTed to the channel's URL, the answer judged.

    3xx            not followed (SPEC 7.2): failed, retried
    429, 503       retried after Retry-After (None when the header is missing)
    tool's code    the format's verdict (rate limit, bad signature, robot gone)
    2xx            delivered
    408, 5xx       retried;  other 4xx  permanent
    no answer      retried (connection refused, reset, 10 s timeout)

The URL is read at each send (`Channel.target`: a rotated key needs no restart) and never
shown: errors and logs carry `url_for_log`, and any text quoting the URL (an exception, an
answer echoing it) has the URL's secret parts replaced first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from api.notify.channels.base import Render
from api.notify.channels.formats import Format, Request
from api.notify.config import Channel
from api.notify.message import Notice, Outcome
from common.retry import retry_after_seconds
from common.secrets import SecretError
from common.urls import ELIDED, location_host, url_for_log

log = logging.getLogger("patrol.api.notify")

TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class WebhookSender:
    """One webhook channel over the shared aiohttp session (its owner closes it)."""

    def __init__(self, channel: Channel, render: Render, http: aiohttp.ClientSession,
                 fmt: Format, *, clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self.render = render
        self.http = http
        self.format = fmt
        self.clock = clock
        """Wall clock for signatures (tests pass a wrong one to see it refused)."""

    async def send(self, notice: Notice) -> Outcome:
        try:
            url = self.channel.target()
            secret = self.channel.secret()
        except SecretError as exc:
            return Outcome(False, f"channel {self.channel.name}: {exc}")
        if not url:
            return Outcome(False, f"channel {self.channel.name}: no URL", permanent=True)
        request = self.format.request(notice, self.channel, self.render, secret, self.clock())
        outcome = await post(self.http, url, request, self.format)
        if not outcome.ok:
            log.debug("notify: channel %s to %s: %s", self.channel.name, url_for_log(url),
                      outcome.error)
        return outcome

    async def close(self) -> None:
        """Nothing of its own to close: the session is shared."""


async def post(http: aiohttp.ClientSession, url: str, request: Request, fmt: Format
               ) -> Outcome:
    """One attempt: POST, never follow a redirect, judge the answer."""
    try:
        target = url
        if request.query:
            target += ("&" if urlsplit(url).query else "?") + urlencode(request.query)
        # encoded=True: the signature's %2B and %2F must reach the tool as they are
        async with http.post(URL(target, encoded=True), data=request.body,
                             allow_redirects=False, timeout=TIMEOUT,
                             headers={"content-type": "application/json"}) as response:
            text = (await response.content.read(4096)).decode("utf-8", "replace")
            outcome = judge(fmt, response.status, response.headers, text)
    except TimeoutError:
        outcome = Outcome(False, "no answer within 10 s")
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL yarl cannot take
        outcome = Outcome(False, f"{type(exc).__name__}: {exc}".removesuffix(": "),
                          permanent=isinstance(exc, ValueError))
    if outcome.error:
        outcome = Outcome(outcome.ok, scrub(outcome.error, url), outcome.retry_after,
                          outcome.permanent)
    return outcome


def judge(fmt: Format, status: int, headers: CIMultiDictProxy[str], text: str) -> Outcome:
    """What an answer means for this message (the table in the module docstring)."""
    if 300 <= status < 400:
        return Outcome(False, f"HTTP {status}: a redirect to "
                              f"{location_host(headers.get('location'))}, not followed")
    if status in (429, 503):
        return Outcome(False, f"HTTP {status}: {text[:200]}",
                       retry_after=retry_after_seconds(headers.get("retry-after")))
    verdict = fmt.verdict(status, text)
    if verdict is not None:
        return verdict
    if 200 <= status < 300:
        return Outcome(True)
    error = f"HTTP {status}: {text[:200]}"
    return Outcome(False, error, permanent=400 <= status < 500 and status != 408)


def scrub(text: str, url: str) -> str:
    """`text` without the parts of `url` that may be its key: the URL itself, its query
    and its values, and the path segments `url_for_log` leaves out."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text.replace(url, "<unparsable URL>")
    shown = urlsplit(url_for_log(url)).path.split("/")
    hidden = [segment for segment, seen in zip(parts.path.split("/"), shown, strict=False)
              if seen == ELIDED]
    secrets = [parts.query, *(value for _, value in parse_qsl(parts.query)), *hidden]
    text = text.replace(url, url_for_log(url))
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, ELIDED)
    return text
