"""A real HTTP receiver of webhooks for the tests, checking signatures independently
(and a scripted HTTP peer for any sender: the forwarder, the TSDB writer).

Every request is recorded (headers, body, when, what it was answered) and its signature is
checked with the `standardwebhooks` package, not with our own `api.webhooks.sign`. What it
answers is scripted: a plan of answers used in turn (`500, 500, 429 Retry-After: 1`), then
a standing answer (`200`, or `410` for ever), and optionally a rule that decides per
request (fail one NC's deliveries and let the others through).

Fixtures `receiver` and `make_receiver`: import `receiver_fixture, make_receiver_fixture`
into a test module to use them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Answer:
    """What the receiver answers one request: a status, headers, after an optional delay."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b""


OK = Answer(200)


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the receiver saw it, and the answer it gave."""

    at: float  # time.monotonic()
    wall: float  # time.time(), to compare with times the API stores
    client_port: int  # the sender's TCP port: which process sent it
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    verified: bool | None  # None: no secret to check with
    error: str | None
    status: int

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def seq(self) -> int:
        return self.payload["data"]["seq"]

    @property
    def nc_id(self) -> str:
        return self.payload["data"]["nc"]["id"]

    @property
    def asset_id(self) -> str:
        return self.payload["data"]["nc"]["asset_id"]

    @property
    def type(self) -> str:
        return self.payload["data"]["type"]


Rule = Callable[[Received], Answer | None]
"""Decides the answer to one request (its `status` is still 0); None: follow the plan."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when 16 senders dial at once


class WebhookReceiver:
    """A ThreadingHTTPServer on 127.0.0.1 and a free port that records every POST."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.plan: list[Answer] = []
        self.then: Answer = OK
        self.rule: Rule | None = None
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="webhook-receiver")

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def answer(self, *plan: Answer, then: Answer = OK) -> None:
        """Answer the next requests with `plan`, one each, then always with `then`."""
        with self._changed:
            self.plan, self.then = list(plan), then

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def delivered(self) -> list[Received]:
        """Requests answered 2xx, in the order they arrived."""
        return [r for r in self.received if 200 <= r.status < 300]

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float = 30,
                   what: str = "condition") -> list[Received]:
        """Block until `predicate(received)` holds; fail the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._received)):
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(r.status, r.webhook_id) for r in self._received]
                    raise AssertionError(f"receiver: {what} not met in {timeout}s; got "
                                         f"{len(summary)} requests: {summary[-20:]}")
                self._changed.wait(min(left, 0.5))
            return list(self._received)

    def _decide(self, request: Received) -> Answer:
        with self._changed:
            if self.rule is not None and (ruled := self.rule(request)) is not None:
                return ruled
            return self.plan.pop(0) if self.plan else self.then

    def _record(self, request: Received) -> None:
        with self._changed:
            self._received.append(request)
            self._changed.notify_all()

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool | None, str | None]:
        if self.secret is None:
            return None, None
        try:
            Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = receiver._verify(body, headers)
                seen = Received(time.monotonic(), time.time(), self.client_address[1],
                                self.path, headers, body, verified, error, 0)
                answer = receiver._decide(seen)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                receiver._record(dataclasses.replace(seen, status=answer.status))

            do_GET = do_POST  # a client that follows a redirect may turn a POST into a GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[WebhookReceiver]:
    """One running receiver, stopped after the test."""
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(name="make_receiver")
def make_receiver_fixture() -> Iterator[Callable[[], WebhookReceiver]]:
    """As many receivers as a test needs, all stopped after it."""
    started: list[WebhookReceiver] = []

    def make() -> WebhookReceiver:
        started.append(WebhookReceiver().start())
        return started[-1]

    yield make
    for server in started:
        server.stop()
