"""The TSDB writer's HTTP edge against real servers on 127.0.0.1 (both senders, v1 and v2):
a redirect is never followed, `Retry-After: 0` does not turn into a busy loop, and the log
never shows what the URL carries besides its origin and path shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.buffer import Buffer
from agent.tsdb import InfluxConfig, LineSerializer, TsdbWriter, make_sender
from collector.reading import Reading
from tests.conftest import free_port
from tests.integration.webhook_receiver import (  # noqa: F401 (fixtures)
    Answer,
    WebhookReceiver,
    make_receiver_fixture,
)

Make = Callable[[], WebhookReceiver]
SECRET = "tsdb-password-0123456789"


@pytest.fixture
def buffer(tmp_path: Path) -> Iterator[Buffer]:
    store = Buffer(tmp_path / "buffer.sqlite")
    store.put([Reading("CH-1", "temp", float(i), 1_700_000_000 + i) for i in range(10)])
    yield store
    store.close()


def writer_for(buffer: Buffer, url: str, api: str, monkeypatch: pytest.MonkeyPatch
               ) -> tuple[TsdbWriter, Callable[[], None]]:
    monkeypatch.setenv("TSDB_TEST_TOKEN", SECRET)
    config = InfluxConfig(url=url, api=api, bucket="patrol", token_env="TSDB_TEST_TOKEN",
                          flush_interval=0.05, timeout=5)
    send, close = make_sender(config)
    return TsdbWriter(buffer, config, LineSerializer("patrol", "plant-1", {}), send), close


def run_for(writer: TsdbWriter, seconds: float) -> None:
    async def run() -> None:
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_is_not_followed_and_the_readings_stay(
        buffer: Buffer, make_receiver: Make, api: str, code: int,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = make_receiver()
    elsewhere.answer(then=Answer(204))
    tsdb = make_receiver()
    tsdb.answer(then=Answer(code, {"Location": f"{elsewhere.url}?db=patrol&u=x"}))
    writer, close = writer_for(buffer, f"http://127.0.0.1:{tsdb.port}", api, monkeypatch)
    try:
        with caplog.at_level(logging.WARNING, logger="patrol.tsdb"):
            run_for(writer, 0.5)
    finally:
        close()
    assert tsdb.received and SECRET in tsdb.received[0].headers["authorization"]
    assert elsewhere.received == []  # neither the readings nor the token went there
    assert buffer.count()["readings"] == 10 and writer.written == 0
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{code}, a redirect to http://127.0.0.1:{elsewhere.port}: not followed" in warning


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_retry_after_zero_gets_a_handful_of_attempts_not_a_flood(
        buffer: Buffer, make_receiver: Make, api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tsdb = make_receiver()
    tsdb.answer(then=Answer(429, {"Retry-After": "0"}))
    writer, close = writer_for(buffer, f"http://127.0.0.1:{tsdb.port}", api, monkeypatch)
    try:
        run_for(writer, 3.0)
    finally:
        close()
    # floored at 1 s (plus up to 25 % jitter): about 3 in 3 s; it was hundreds
    assert 1 <= len(tsdb.received) <= 5, len(tsdb.received)
    assert buffer.count()["readings"] == 10


def test_the_log_shows_the_tsdb_origin_but_not_its_credentials(
        buffer: Buffer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nobody listens: unreachable
    url = f"http://writer:{SECRET}@127.0.0.1:{port}/influx/{SECRET}?u=writer&p={SECRET}"
    writer, close = writer_for(buffer, url, "v1", monkeypatch)
    try:
        with caplog.at_level(logging.DEBUG, logger="patrol.tsdb"):
            run_for(writer, 0.3)
    finally:
        close()
    said = [r.getMessage() for r in caplog.records]
    assert any(f"cannot write to http://127.0.0.1:{port}/influx/***" in m for m in said), said
    assert not [m for m in said if SECRET in m or "writer:" in m]
