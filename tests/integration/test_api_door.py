"""Limits before work, against `patrol api` as a process over raw sockets: the token is
checked before a body is read, each route has its own body limit, and bodies in flight
share a budget.

A client here declares a large body and sends only a little of it: the server must
answer (and close) without waiting for the rest, which proves it never asked for it.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_token
from api.door import MAX_BODY, SMALL_BODY
from api.store import Database
from tests.conftest import free_port
from tests.integration.conftest import PatrolProcess
from tests.test_api import engine_event

DECLARED = 60 * 2**20
SENT = 4096
READ_TIMEOUT = 20.0
"""How long a client waits for an answer: the old code waits for the whole body, forever."""


@dataclass
class Server:
    port: int
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`patrol api` on SQLite, with a token per role (agent scoped to tower-a)."""
    tmp = tmp_path_factory.mktemp("door")
    port = free_port()
    database_url = f"sqlite:///{tmp / 'patrol.sqlite'}"
    (tmp / "site.yaml").write_text(f"site: {{id: tower-a}}\nserver: {{listen: 127.0.0.1:"
                                   f"{port}, database: '{database_url}'}}\n")
    database = Database(database_url)
    try:
        with database.session() as session:
            tokens = {role: create_token(session, name=role, role=role,
                                         sites=["tower-a"] if role == "agent" else None)
                      for role in ("agent", "quality", "tracker")}
    finally:
        database.close()
    process = PatrolProcess("api", "-c", tmp / "site.yaml", cwd=tmp)
    try:
        process.wait_for_output("Patrol API on")
        yield Server(port, tokens)
    finally:
        assert process.stop() == 0, process.output
        assert "Traceback" not in process.output, process.output


def request_head(method: str, path: str, *, token: str | None = None,
                 length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails). A
    server closing with some of our body unread resets the connection after its answer."""
    sock.settimeout(READ_TIMEOUT)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        if not received:
            raise
    return received


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def send_part_of_a_large_body(port: int, head: bytes) -> bytes:
    """Send `head` and SENT bytes of the body it declares, then wait for the answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + b"[" * SENT)
        return read_until_closed(sock)


@pytest.mark.parametrize("token", [None, "pat_not-a-token"], ids=["none", "unknown"])
def test_an_unauthenticated_large_post_is_401_before_its_body_is_read(
        server: Server, token: str | None) -> None:
    answer = send_part_of_a_large_body(server.port, request_head(
        "POST", "/api/v1/events", token=token, length=DECLARED))
    status, headers, body = parse(answer)
    assert status == 401, answer
    assert headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close"  # and it did: read_until_closed saw the end
    assert body["detail"] in ("missing bearer token", "invalid or revoked token")


def test_an_authenticated_body_over_a_small_routes_limit_is_413_unread(
        server: Server) -> None:
    """Small routes (everything but POST /events) take at most SMALL_BODY."""
    answer = send_part_of_a_large_body(server.port, request_head(
        "POST", "/api/v1/nonconformances", token=server.tokens["quality"],
        length=2 * SMALL_BODY))
    status, headers, body = parse(answer)
    assert status == 413, answer
    assert body == {"detail": f"the body is over {SMALL_BODY} bytes"}
    assert headers["connection"] == "close"


def test_a_chunked_body_over_a_small_routes_limit_is_413(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request_head("POST", "/api/v1/nonconformances",
                                  token=server.tokens["quality"], chunked=True))
        piece = b"x" * 65536
        try:
            for _ in range(SMALL_BODY // len(piece) + 2):
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed as soon as the body passed the limit
        status, _, body = parse(read_until_closed(sock))
    assert status == 413
    assert body == {"detail": f"the body is over {SMALL_BODY} bytes"}


def post_events(port: int, token: str, events: list[dict[str, Any]]) -> tuple[int, dict[str, str]]:
    body = json.dumps({"events": events}).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_head("POST", "/api/v1/events", token=token, length=len(body))
                     .replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
        status, headers, _ = parse(read_until_closed(sock))
    return status, headers


def wait_for_status(check: Any, wanted: int) -> tuple[int, dict[str, str]]:
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        status, headers = check()
        if status == wanted or time.monotonic() > deadline:
            return status, headers
        time.sleep(0.1)


def test_bodies_in_flight_share_a_budget(server: Server) -> None:
    """A body as large as the budget, in flight, makes the next large one wait its turn
    (503, Retry-After); small routes have their own budget and still answer."""
    agent = server.tokens["agent"]
    event = engine_event()

    def hog_the_budget() -> socket.socket:
        hog = socket.create_connection(("127.0.0.1", server.port))
        hog.sendall(request_head("POST", "/api/v1/events", token=agent, length=MAX_BODY)
                    + b"[" * SENT)
        return hog

    hog = hog_the_budget()
    try:
        deadline = time.monotonic() + READ_TIMEOUT
        while (status := post_events(server.port, agent, [event]))[0] != 503 \
                and time.monotonic() < deadline:
            if select.select([hog], [], [], 0)[0]:
                # answered already: its head came while a poll's body held part of the
                # budget, so the hog itself was refused; it tries again
                hog.close()
                hog = hog_the_budget()
            time.sleep(0.1)
        assert status[0] == 503
        assert status[1]["retry-after"] == "1"
        small = send_part_of_a_large_body(server.port, request_head(
            "GET", "/api/v1/nonconformances", token=server.tokens["tracker"]).replace(
                b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        assert parse(small)[0] == 200
    finally:
        hog.close()  # the budget comes back when the request ends
    status, _ = wait_for_status(lambda: post_events(server.port, agent, [event]), 200)
    assert status == 200


def test_health_and_the_api_description_need_no_token(server: Server) -> None:
    for path in ("/api/v1/health", "/openapi.json", "/docs"):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request_head("GET", path).replace(
                b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            assert parse_status(read_until_closed(sock)) == 200, path


def parse_status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_the_app_never_asks_for_the_body_of_an_unauthenticated_request(
        db: Database) -> None:
    """At the ASGI level: not one `receive` call before the 401."""
    import asyncio

    app = create_app(db)
    calls = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"[" * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/v1/events",
             "raw_path": b"/api/v1/events", "query_string": b"", "root_path": "",
             "headers": [(b"content-length", str(DECLARED).encode()),
                         (b"authorization", b"Bearer pat_unknown")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    assert calls == 0
    assert sent[0]["status"] == 401
    assert (b"connection", b"close") in sent[0]["headers"]
    with TestClient(app) as client:  # the same app still serves a real token
        with db.session() as session:
            token = create_token(session, name="t", role="tracker")
        assert client.get("/api/v1/nonconformances",
                          headers={"Authorization": f"Bearer {token}"}).status_code == 200
