"""How `patrol` ends when a task ends on its own: one error line, no traceback spam.

Before: the task's whole traceback was logged at ERROR, then a second error line.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.buffer import Buffer
from agent.runtime import _until_stop_or_failure, writers
from agent.site import load_site


def test_a_task_that_fails_is_named_in_one_error_line_with_its_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise OSError(5, "disk I/O error")

    async def forever() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> str:
        tasks = [asyncio.create_task(forever(), name="tick"),
                 asyncio.create_task(broken(), name="pipeline")]
        try:
            return await _until_stop_or_failure(asyncio.Event(), tasks)
        finally:
            tasks[0].cancel()

    caplog.set_level(logging.DEBUG, logger="patrol")
    assert asyncio.run(scenario()) == "pipeline"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "pipeline failed: OSError: [Errno 5] disk I/O error; stopping, exit status 1 (a "
        "service manager restarts patrol)"]
    assert errors[0].exc_info is None  # the traceback only at debug level (patrol -v)
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.DEBUG)


def test_max_backoff_settings_reach_the_forwarder_and_the_tsdb_writer(tmp_path: Path) -> None:
    """`forward.max_backoff` and `influxdb.max_backoff` cap the writers' waits (default 60 s,
    before which no setting reached them)."""
    (tmp_path / "site.yaml").write_text(
        "site: {id: plant-1}\n"
        "influxdb: {url: 'http://127.0.0.1:1', bucket: b, max_backoff: 3s}\n"
        "forward: {url: 'http://127.0.0.1:1', max_backoff: 2s}\n")
    site = load_site(tmp_path / "site.yaml")
    buffer = Buffer(tmp_path / "buffer.sqlite")
    out = writers(site, buffer, asyncio.Event())
    try:
        assert out.forwarder.backoff.cap == 2.0
        assert out.tsdb is not None and out.tsdb.backoff.cap == 3.0
        waits = [out.forwarder.backoff.failed() for _ in range(12)]
        assert max(waits) <= 2.0 and waits[-1] >= 1.0  # reached the cap, not past it
    finally:
        if out.close_tsdb is not None:
            out.close_tsdb()
        buffer.close()


def test_max_backoff_defaults_to_a_minute(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: {id: plant-1}\n"
        "influxdb: {url: 'http://127.0.0.1:1', bucket: b}\n"
        "forward: {url: 'http://127.0.0.1:1'}\n")
    site = load_site(tmp_path / "site.yaml")
    assert site.config.forward is not None and site.config.influxdb is not None
    assert site.config.forward.max_backoff == site.config.influxdb.max_backoff == 60.0
