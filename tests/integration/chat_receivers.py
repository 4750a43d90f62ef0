"""Chat tools as a test can run them: one HTTP server that checks what DingTalk, WeCom,
Feishu and Slack check, and answers as they answer.

Written from the vendors' robot pages, independently of `api.notify.channels` (signatures
computed here, not imported):

    DingTalk  POST /robot/send?access_token=T[&timestamp=&sign=]   HTTP 200 {errcode, errmsg}
              300001 no such token; 310000 signature or timestamp (±1 h) refused, or no
              keyword; 40035 not a markdown/text message; 460101 text over 20000 bytes;
              130101 over 20 a minute, then throttled for 10 minutes
    WeCom     POST /cgi-bin/webhook/send?key=K                      HTTP 200 {errcode, errmsg}
              93000 no such key; 40008 message type; 40058 markdown over 4096 bytes or
              text over 2048; 45009 over 20 a minute
    Feishu    POST /open-apis/bot/v2/hook/H                         HTTP 200 {code, msg}
              19001 no such hook; 19021 signature or timestamp (±1 h) refused; HTTP 400
              9499 Bad Request: body over 20 KB or no msg_type; 11232 over 5 a second or
              100 a minute
    Slack     POST /services/T/B/X                                  200 "ok" | 4xx word
              404 no_service; 400 no_text / invalid_blocks (section over 3000 chars,
              header over 150); 429 Retry-After: 1 over 1 a second
    generic   POST /generic/<name>: records the JSON, 200
    moved     POST /moved: 307 to /generic/moved (a sender must not follow it)

Each robot records what it accepted (`accepted`), and the server every request and its
answer (`requests`): tests assert on both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

HOUR = 3600.0


@dataclass
class Robot:
    """One robot (or Slack app webhook) and what it accepted."""

    tool: str
    key: str
    base: str
    secret: str | None = None
    keywords: tuple[str, ...] = ()
    accepted: list[dict[str, Any]] = field(default_factory=list)
    sent: deque[float] = field(default_factory=deque)  # monotonic times of accepted ones
    blocked_until: float = 0.0

    @property
    def url(self) -> str:
        return {"dingtalk": f"{self.base}/robot/send?access_token={self.key}",
                "wecom": f"{self.base}/cgi-bin/webhook/send?key={self.key}",
                "feishu": f"{self.base}/open-apis/bot/v2/hook/{self.key}",
                "slack": f"{self.base}/services/T0PATROL/B0PATROL/{self.key}",
                "generic": f"{self.base}/generic/{self.key}"}[self.tool]

    def count(self, now: float, window: float) -> int:
        """Messages accepted in the last `window` seconds."""
        return sum(1 for at in self.sent if at > now - window)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request and the answer it got."""

    path: str
    body: bytes
    status: int
    answer: str


Answer = tuple[int, dict[str, str], str]


def ok_json(code_key: str, message_key: str, code: int, message: str) -> Answer:
    return 200, {"content-type": "application/json"}, json.dumps(
        {code_key: code, message_key: message})


class ChatServer:
    """A ThreadingHTTPServer on 127.0.0.1 playing every tool; `add` makes a robot."""

    def __init__(self) -> None:
        self.robots: dict[tuple[str, str], Robot] = {}
        self.requests: list[Seen] = []
        self.clock = time.time  # the tools' wall clock (signature windows)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="chat-receivers")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ChatServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def add(self, tool: str, *, secret: str | None = None,
            keywords: tuple[str, ...] = ()) -> Robot:
        """A new robot of `tool` with a fresh key (and signing secret, when given)."""
        key = secrets.token_hex(12)
        robot = Robot(tool, key, self.base, secret, keywords)
        with self._lock:
            self.robots[(tool, key)] = robot
        return robot

    def hits(self, path_prefix: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if seen.path.startswith(path_prefix)]

    # --- the tools -------------------------------------------------------------------------

    def _route(self, path: str, body: bytes) -> Answer:
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        if parts.path == "/robot/send":
            return self._dingtalk(self.robots.get(("dingtalk", query.get("access_token", ""))),
                                  query, body)
        if parts.path == "/cgi-bin/webhook/send":
            return self._wecom(self.robots.get(("wecom", query.get("key", ""))), body)
        if parts.path.startswith("/open-apis/bot/v2/hook/"):
            return self._feishu(self.robots.get(("feishu", segments[-1])), body)
        if parts.path.startswith("/services/"):
            return self._slack(self.robots.get(("slack", segments[-1])), body)
        if parts.path.startswith("/generic/"):
            robot = self.robots.get(("generic", segments[-1]))
            if robot is None:
                return 404, {}, "no such receiver"
            robot.accepted.append(json.loads(body))
            return 200, {}, ""
        if parts.path == "/moved":
            return 307, {"location": f"{self.base}/generic/moved"}, ""
        return 404, {}, "not found"

    def _dingtalk(self, robot: Robot | None, query: dict[str, str], body: bytes) -> Answer:
        def answer(code: int, message: str) -> Answer:
            return ok_json("errcode", "errmsg", code, message)

        if robot is None:
            return answer(300001, "token is not exist")
        now = time.monotonic()
        if robot.blocked_until > now:
            return answer(130101, "send too fast, exceed 20 times per minute")
        if robot.secret is not None:
            stamp, sign = query.get("timestamp", ""), query.get("sign", "")
            expected = base64.b64encode(hmac.new(
                robot.secret.encode(), f"{stamp}\n{robot.secret}".encode(),
                hashlib.sha256).digest()).decode()
            if not stamp.isdigit() or abs(int(stamp) / 1000 - self.clock()) > HOUR:
                return answer(310000, "invalid timestamp")
            if not hmac.compare_digest(sign, expected):
                return answer(310000, "sign not match")
        message = json.loads(body)
        kind = message.get("msgtype")
        text = (message.get("markdown") or {}).get("text") if kind == "markdown" \
            else (message.get("text") or {}).get("content") if kind == "text" else None
        if not isinstance(text, str) or (kind == "markdown"
                                         and not message["markdown"].get("title")):
            return answer(40035, "缺少参数 json")
        if len(text.encode()) > 20000:
            return answer(460101, "message too long")
        if robot.keywords and not any(word in text for word in robot.keywords):
            return answer(310000, "keywords not in content")
        if robot.count(now, 60) >= 20:
            robot.blocked_until = now + 600
            return answer(130101, "send too fast, exceed 20 times per minute")
        return self._accept(robot, message, now, answer(0, "ok"))

    def _wecom(self, robot: Robot | None, body: bytes) -> Answer:
        def answer(code: int, message: str) -> Answer:
            return ok_json("errcode", "errmsg", code, message)

        if robot is None:
            return answer(93000, "invalid webhook url")
        message = json.loads(body)
        kind = message.get("msgtype")
        limits = {"markdown": 4096, "text": 2048}
        if kind not in limits or not isinstance((message.get(kind) or {}).get("content"), str):
            return answer(40008, "invalid message type")
        if len(message[kind]["content"].encode()) > limits[kind]:
            return answer(40058, f"content exceed max length {limits[kind]}")
        now = time.monotonic()
        if robot.count(now, 60) >= 20:
            return answer(45009, "api freq out of limit")
        return self._accept(robot, message, now, answer(0, "ok"))

    def _feishu(self, robot: Robot | None, body: bytes) -> Answer:
        def answer(code: int, message: str) -> Answer:
            return ok_json("code", "msg", code, message)

        if robot is None:
            return answer(19001, "param invalid: incoming webhook access token invalid")
        if len(body) > 20 * 1024:
            return 400, {"content-type": "application/json"}, json.dumps(
                {"code": 9499, "msg": "Bad Request"})
        message = json.loads(body)
        if robot.secret is not None:
            stamp, sign = str(message.get("timestamp", "")), str(message.get("sign", ""))
            expected = base64.b64encode(hmac.new(
                f"{stamp}\n{robot.secret}".encode(), b"", hashlib.sha256).digest()).decode()
            if not stamp.isdigit() or abs(int(stamp) - self.clock()) > HOUR \
                    or not hmac.compare_digest(sign, expected):
                return answer(19021, "sign match fail or timestamp is not within one hour "
                                     "from current time")
        if message.get("msg_type") not in ("text", "post", "interactive", "image",
                                           "share_chat"):
            return 400, {"content-type": "application/json"}, json.dumps(
                {"code": 9499, "msg": "Bad Request"})
        now = time.monotonic()
        if robot.count(now, 1) >= 5 or robot.count(now, 60) >= 100:
            return answer(11232, "frequency limited")
        return self._accept(robot, message, now, answer(0, "success"))

    def _slack(self, robot: Robot | None, body: bytes) -> Answer:
        if robot is None:
            return 404, {}, "no_service"
        message = json.loads(body)
        if not message.get("text") and not message.get("blocks"):
            return 400, {}, "no_text"
        for block in message.get("blocks", []):
            text = (block.get("text") or {}).get("text", "")
            if (block.get("type") == "header" and len(text) > 150) \
                    or (block.get("type") == "section" and len(text) > 3000):
                return 400, {}, "invalid_blocks"
        now = time.monotonic()
        if robot.count(now, 1) >= 1:
            return 429, {"retry-after": "1"}, "rate_limited"
        return self._accept(robot, message, now, (200, {}, "ok"))

    def _accept(self, robot: Robot, message: dict[str, Any], now: float,
                answer: Answer) -> Answer:
        robot.accepted.append(message)
        robot.sent.append(now)
        while robot.sent and robot.sent[0] < now - 60:
            robot.sent.popleft()
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with server._lock:
                    try:
                        status, headers, text = server._route(self.path, body)
                    except ValueError:
                        status, headers, text = 400, {}, "invalid JSON"
                    server.requests.append(Seen(self.path, body, status, text))
                payload = text.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # a client following a redirect may turn POST into GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(name="chat")
def chat_fixture() -> Iterator[ChatServer]:
    """One running ChatServer, stopped after the test."""
    server = ChatServer().start()
    yield server
    server.stop()
