"""Each chat tool's message: its JSON shape within its size, its signature, its answers.

    tool      body                                signed                 size
    dingtalk  markdown {title, text}, at          query timestamp+sign   text 20000 bytes
    wecom     markdown {content} | text {content} key in the URL         4096 | 2048 bytes
    feishu    interactive card (lark_md)          body timestamp+sign    body 20 KB
    slack     text + header and mrkdwn section    key in the URL         section 3000 chars
    generic   {notice, entries (NC JSON), text}   no                     (text 16 KB)

A format builds a `Request` and reads the answer (`verdict`): the chat tools answer
HTTP 200 with an error code in JSON, so rate limits and refused signatures are told apart
here; None leaves the answer to the HTTP status rules of `webhook`. Codes not listed are
retried (a tool's transient error must not lose an alert); listed permanent ones fail at
once. `Rendered.title` goes where the tool shows a title (DingTalk's notification
preview, Feishu's card header, Slack's header block); the body is the message itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from api.notify.channels.base import Render, fit
from api.notify.config import Channel, Mention
from api.notify.message import Notice, Outcome, Rendered


@dataclass(frozen=True, slots=True)
class Request:
    """What to POST: the JSON body and query parameters added to the channel's URL."""

    body: bytes
    query: dict[str, str] = field(default_factory=dict)


class Format(Protocol):
    name: str

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request: ...

    def verdict(self, status: int, text: str) -> Outcome | None: ...


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _code(text: str, codes: tuple[str, ...], messages: tuple[str, ...]
          ) -> tuple[int | None, str]:
    """The error code and message of a JSON answer (None: no code in it)."""
    try:
        answer = json.loads(text)
    except ValueError:
        return None, ""
    if not isinstance(answer, dict):
        return None, ""
    code = next((answer[k] for k in codes if isinstance(answer.get(k), int)), None)
    return code, str(next((answer[k] for k in messages if k in answer), ""))


def _verdict(tool: str, status: int, text: str, code: int | None, message: str,
             retry: dict[int, float], permanent: frozenset[int]) -> Outcome | None:
    """An answer with an error code: ok, rate limited, refused for good, or failed (for
    good when the HTTP status says the request itself is wrong)."""
    if code is None:
        if 200 <= status < 300:
            return Outcome(False, f"{tool} answered HTTP {status} without an error code: "
                                  f"{text[:200]}")
        return None
    if code == 0:
        return Outcome(True)
    error = f"{tool} error {code}: {message}"[:300]
    if code in retry:
        return Outcome(False, error, retry_after=retry[code])
    refused = 400 <= status < 500 and status not in (408, 429)
    return Outcome(False, error, permanent=code in permanent or refused)


# --- DingTalk -----------------------------------------------------------------------------

def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg="timestamp\\nsecret")); URL-encoded as a query
    parameter."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalk:
    """A group robot (自定义机器人): markdown, signed in the query when it has a secret."""

    name = "dingtalk"
    TEXT_LIMIT = 20000
    BLOCKED = 600.0
    """130101 / 410100: over 20 messages a minute, the robot is throttled for 10 minutes."""
    PERMANENT = frozenset({310000,  # signature, timestamp, keyword or IP refused
                           300001, 400101, 400106,  # no such token or robot
                           400013, 400102,  # group dissolved, robot stopped
                           430101, 430102, 430103, 430104})  # content refused

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request:
        mention = _at_text(channel.mention)
        rendered = fit(render, notice, "dingtalk", self.TEXT_LIMIT,
                       lambda r: len((r.body + mention).encode()))
        body = {"msgtype": "markdown",
                "markdown": {"title": rendered.title, "text": rendered.body + mention},
                "at": {"atMobiles": channel.mention.mobiles,
                       "atUserIds": channel.mention.user_ids, "isAtAll": channel.mention.all}}
        query: dict[str, str] = {}
        if secret:
            timestamp = str(int(now * 1000))
            query = {"timestamp": timestamp, "sign": dingtalk_sign(secret, timestamp)}
        return Request(_json(body), query)

    def verdict(self, status: int, text: str) -> Outcome | None:
        code, message = _code(text, ("errcode",), ("errmsg",))
        return _verdict("dingtalk", status, text, code, message,
                        {130101: self.BLOCKED, 410100: self.BLOCKED}, self.PERMANENT)


def _at_text(mention: Mention) -> str:
    """DingTalk shows a mention only when the text holds `@mobile` (or `@userId`) too."""
    names = [*mention.mobiles, *mention.user_ids]
    return "\n\n" + " ".join(f"@{name}" for name in names) if names else ""


# --- WeCom --------------------------------------------------------------------------------

class WeCom:
    """A group robot (群机器人): key in the URL, no signature; markdown or text."""

    name = "wecom"
    LIMITS = {"markdown": 4096, "text": 2048}
    PERMANENT = frozenset({93000,  # invalid webhook URL (key)
                           40008, 40058})  # message type, content too long

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request:
        kind = channel.msgtype
        mention = channel.mention
        if kind == "markdown":
            # markdown mentions only by user id, written into the content
            tail = "".join(f"<@{user}>" for user in mention.user_ids)
            tail = "\n" + tail if tail else ""
            rendered = fit(render, notice, "wecom_markdown", self.LIMITS[kind],
                           lambda r: len((r.body + tail).encode()))
            return Request(_json({"msgtype": "markdown",
                                  "markdown": {"content": rendered.body + tail}}))
        rendered = render(notice, "wecom_text", self.LIMITS[kind])
        content: dict[str, Any] = {"content": rendered.body}
        users = [*mention.user_ids, *(["@all"] if mention.all else [])]
        if users:
            content["mentioned_list"] = users
        if mention.mobiles:
            content["mentioned_mobile_list"] = mention.mobiles
        return Request(_json({"msgtype": "text", "text": content}))

    def verdict(self, status: int, text: str) -> Outcome | None:
        code, message = _code(text, ("errcode",), ("errmsg",))
        return _verdict("wecom", status, text, code, message, {45009: 60.0}, self.PERMANENT)


# --- Feishu -------------------------------------------------------------------------------

def feishu_sign(secret: str, timestamp_s: str) -> str:
    """base64(HMAC-SHA256(key="timestamp\\nsecret", msg=b"")): the key is the string to
    sign, the message empty (Feishu's own example)."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class Feishu:
    """A custom bot (自定义机器人): an interactive card, signed in the body."""

    name = "feishu"
    BODY_LIMIT = 20000
    """20 KB for the whole request body; a little under, for the signature fields."""
    COLOURS = {"critical": "red", "major": "orange", "minor": "blue"}
    PERMANENT = frozenset({19001,  # no such hook
                           19021, 19022, 19024})  # signature or timestamp, IP, keyword

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request:
        signature: dict[str, str] = {}
        if secret:
            timestamp = str(int(now))
            signature = {"timestamp": timestamp, "sign": feishu_sign(secret, timestamp)}

        def body(rendered: Rendered) -> bytes:
            card = {"header": {"title": {"tag": "plain_text", "content": rendered.title},
                               "template": self.COLOURS.get(notice.severity, "blue")},
                    "elements": [{"tag": "div",
                                  "text": {"tag": "lark_md", "content": rendered.body}}]}
            return _json({**signature, "msg_type": "interactive", "card": card})

        rendered = fit(render, notice, "feishu", self.BODY_LIMIT, lambda r: len(body(r)))
        return Request(body(rendered))

    def verdict(self, status: int, text: str) -> Outcome | None:
        code, message = _code(text, ("code", "StatusCode"), ("msg", "StatusMessage"))
        if code == 9499 and "too many" in message.lower():
            # 9499 is the gateway's: "too many request", or "Bad Request" (the HTTP status
            # then says 400, and the request is refused for good)
            return Outcome(False, f"feishu error 9499: {message}", retry_after=60.0)
        return _verdict("feishu", status, text, code, message, {11232: 60.0}, self.PERMANENT)


# --- Slack --------------------------------------------------------------------------------

class Slack:
    """An incoming webhook: header and mrkdwn section, plain `text` for notifications."""

    name = "slack"
    SECTION_LIMIT = 3000
    HEADER_LIMIT = 150

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request:
        # the limit is in characters, the renderer's in bytes: up to 4 bytes a character
        rendered = fit(render, notice, "slack", self.SECTION_LIMIT, lambda r: len(r.body),
                       budget=4 * self.SECTION_LIMIT)
        title = rendered.title
        if len(title) > self.HEADER_LIMIT:
            title = title[:self.HEADER_LIMIT - 1] + "…"
        return Request(_json({
            "text": rendered.title,
            "blocks": [{"type": "header", "text": {"type": "plain_text", "text": title}},
                       {"type": "section",
                        "text": {"type": "mrkdwn", "text": rendered.body}}]}))

    def verdict(self, status: int, text: str) -> Outcome | None:
        if 200 <= status < 300 and text.strip() != "ok":
            return Outcome(False, f"slack answered HTTP {status}: {text[:200]}")
        return None  # errors come as 4xx with a word (invalid_payload, no_service)


# --- generic ------------------------------------------------------------------------------

TEXT_LIMIT = 16384


def document(notice: Notice, rendered: Rendered) -> dict[str, Any]:
    """The generic JSON: what the notice says, the NCs in full, and a readable text (the
    webhook's body and the MQTT channel's payload)."""
    return {"notice": {"kind": notice.kind, "total": notice.total, "channel": notice.channel,
                       "severity": notice.severity},
            "title": rendered.title, "text": rendered.body,
            "entries": [{"event": e.event, "nc": e.nc, "nc_url": e.nc_url,
                         "ack_url": e.ack_url} for e in notice.entries]}


class Generic:
    """Any receiver of our own JSON (a ticket system, a script)."""

    name = "generic"

    def request(self, notice: Notice, channel: Channel, render: Render, secret: str | None,
                now: float) -> Request:
        return Request(_json(document(notice, render(notice, "generic", TEXT_LIMIT))))

    def verdict(self, status: int, text: str) -> Outcome | None:
        return None


FORMATS: dict[str, Format] = {f.name: f for f in (DingTalk(), WeCom(), Feishu(), Slack(),
                                                   Generic())}
