"""How `patrol` ends when a task ends on its own: one error line, no traceback spam.

Before: the task's whole traceback was logged at ERROR, then a second error line.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.runtime import _until_stop_or_failure


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
