"""The forwarder against real HTTP servers on 127.0.0.1: what leaves the outbox is only what
the API's answer confirms; redirects are never followed; a skewed clock delays events,
never loses them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.buffer import Buffer
from agent.forward import DeliveryError, Forwarder, http_sink
from agent.runtime import in_process_sink
from api.store import Database
from tests.buffer_contents import dead_letters
from tests.integration.webhook_receiver import (  # noqa: F401 (fixtures)
    Answer,
    WebhookReceiver,
    make_receiver_fixture,
)
from tests.test_feed_webhooks import STANDARD

TOKEN = "agent-token-0123456789"
Make = Callable[[], WebhookReceiver]


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    store = Buffer(tmp_path / "buffer.sqlite")
    yield store
    store.close()


def queue_events(buffer: Buffer, n: int, at: datetime | None = None) -> list[str]:
    when = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    ids = [f"ev_{i}" for i in range(n)]
    buffer.put([], [{"id": i, "type": "violation_started", "at": when} for i in ids])
    return ids


def json_answer(status: int = 200, **body: Any) -> Answer:
    return Answer(status, {"Content-Type": "application/json"}, body=json.dumps(body).encode())


def deliver(buffer: Buffer, url: str) -> int:
    forwarder = Forwarder(buffer, http_sink(url, TOKEN, timeout=5), asyncio.Event())
    return asyncio.run(forwarder.deliver_pending())


def pending(buffer: Buffer) -> list[str]:
    return [body["id"] for _, body in buffer.pending_events(1000)]


def run_until_delivered(buffer: Buffer, url: str) -> None:
    """Run a forwarder (retrying quickly) until the outbox is empty, at most 30 s."""

    async def run() -> None:
        forwarder = Forwarder(buffer, http_sink(url, TOKEN), asyncio.Event(), max_backoff=0.1)
        task = asyncio.create_task(forwarder.run())
        while pending(buffer):  # noqa: ASYNC110 (the outbox is a table, not an event)
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(run(), 30))


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_deletes_nothing(
        buffer: Buffer, make_receiver: Make, code: int) -> None:
    elsewhere = make_receiver()
    ids = queue_events(buffer, 3)
    elsewhere.answer(then=json_answer(applied=3, duplicates=0, ids=ids))
    central = make_receiver()
    central.answer(then=Answer(code, {"Location": f"{elsewhere.url}?steal=1"}))

    with pytest.raises(DeliveryError) as refused:
        deliver(buffer, f"http://127.0.0.1:{central.port}")
    assert pending(buffer) == ids  # nothing deleted
    assert len(central.received) == 1
    assert central.received[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert elsewhere.received == []  # neither the events nor the token went there
    said = str(refused.value)
    assert str(code) in said and f"127.0.0.1:{elsewhere.port}" in said
    assert "steal" not in said and "/hook" not in said


def test_a_2xx_page_that_is_not_the_api_answer_deletes_nothing(
        buffer: Buffer, make_receiver: Make) -> None:
    proxy = make_receiver()
    proxy.answer(then=Answer(200, {"Content-Type": "text/html"},
                             body=b"<html>Captive portal: please sign in</html>"))
    ids = queue_events(buffer, 3)
    with pytest.raises(DeliveryError, match="not the API's"):
        deliver(buffer, f"http://127.0.0.1:{proxy.port}")
    assert pending(buffer) == ids


def test_only_the_events_the_answer_names_leave_the_outbox(
        buffer: Buffer, make_receiver: Make) -> None:
    api = make_receiver()
    ids = queue_events(buffer, 4)
    api.answer(json_answer(applied=1, duplicates=1, ids=[ids[0], ids[2]]),
               then=json_answer(applied=2, duplicates=0, ids=[ids[1], ids[3]]))
    url = f"http://127.0.0.1:{api.port}"
    with pytest.raises(DeliveryError, match="confirmed 2 of 4"):
        deliver(buffer, url)
    assert pending(buffer) == [ids[1], ids[3]]
    assert deliver(buffer, url) == 2  # the rest, on the next try
    assert pending(buffer) == []


@pytest.mark.parametrize(("applied", "duplicates", "left"), [(2, 1, 0), (1, 1, 3)])
def test_an_api_without_ids_confirms_only_by_counts_covering_the_batch(
        buffer: Buffer, make_receiver: Make, applied: int, duplicates: int, left: int) -> None:
    api = make_receiver()
    api.answer(then=json_answer(applied=applied, duplicates=duplicates))
    queue_events(buffer, 3)
    with contextlib.suppress(DeliveryError):
        deliver(buffer, f"http://127.0.0.1:{api.port}")
    assert len(pending(buffer)) == left


def test_a_clock_ahead_of_the_api_keeps_the_events_and_logs_the_offset_once(
        buffer: Buffer, make_receiver: Make, caplog: pytest.LogCaptureFixture) -> None:
    server_time = datetime.now(UTC)
    ahead = server_time + timedelta(hours=2)
    ids = queue_events(buffer, 3, at=ahead)
    skew = json_answer(422, detail={"code": "clock_skew",
                                    "server_time": server_time.isoformat()})
    top_level = json_answer(422, code="clock_skew", server_time=server_time.isoformat())
    api = make_receiver()
    api.answer(skew, top_level, skew, skew, then=json_answer(applied=3, duplicates=0, ids=ids))
    with caplog.at_level(logging.DEBUG, logger="patrol.forward"):
        run_until_delivered(buffer, f"http://127.0.0.1:{api.port}")
    assert dead_letters(buffer, kind="event") == []  # never dead-lettered
    assert [r.status for r in api.received] == [422, 422, 422, 422, 200]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # at most once a minute
    assert "clock runs ahead" in errors[0] and "+7200" in errors[0], errors[0]


def test_the_in_process_sink_confirms_what_it_applied(tmp_path: Path) -> None:
    from rules.events import Event

    database = Database(f"sqlite:///{tmp_path / 'central.sqlite'}")
    start = datetime.now(UTC) - timedelta(hours=1)
    bodies = [Event(type="violation_started", site_id="tower-a", asset_id=f"CH-{i}",
                    standard_id="HVAC-CHW-SUPPLY", standard_version=1,
                    metric="chw_supply_temp", episode_start=start.timestamp(),
                    at=start.timestamp(), value=9.4, limit={"min": 6, "max": 8},
                    standard=STANDARD
                    ).to_dict() for i in range(3)]
    sink = in_process_sink(database)
    try:
        assert asyncio.run(sink(bodies)) == {body["id"] for body in bodies}
        assert asyncio.run(sink(bodies)) == {body["id"] for body in bodies}  # duplicates
    finally:
        database.close()


def test_the_log_shows_the_api_origin_but_no_key_in_its_url(
        buffer: Buffer, make_receiver: Make, caplog: pytest.LogCaptureFixture) -> None:
    key = "k3y0123456789abcdef"
    api = make_receiver()
    api.answer(json_answer(503, detail="maintenance"), then=json_answer(applied=1, duplicates=0))
    queue_events(buffer, 1)
    with caplog.at_level(logging.DEBUG, logger="patrol.forward"):
        run_until_delivered(buffer, f"http://127.0.0.1:{api.port}/gw/{key}")  # keyed by path
    said = [r.getMessage() for r in caplog.records]
    assert any(f"http://127.0.0.1:{api.port}/gw/***/api/v1/events answered 503" in m
               for m in said), said
    assert not [m for m in said if key in m]
