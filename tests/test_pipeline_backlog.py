"""The pipeline's backlog (readings emitted, not yet judged) and its watermarks, which ask
pausable sources (MQTT) to stop reading and to go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.buffer import Buffer
from agent.pipeline import Pipeline
from collector.reading import Reading
from rules.engine import Engine


def test_backlog_crosses_high_then_low_water_once_each(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.db")
    pipeline = Pipeline(Engine("s", [], []), buffer, high_water=100, low_water=20)
    told: list[bool] = []
    pipeline.on_backlog.append(told.append)

    async def scenario() -> None:
        for n in range(30):  # 150 readings, emitted before the pipeline runs
            pipeline.emit([Reading("a", "m", float(n), 1.0e9 + n)] * 5)
        assert pipeline.backlog == 150 and told == [True]
        task = asyncio.create_task(pipeline.run())
        for _ in range(500):
            if pipeline.readings == 150:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert pipeline.backlog == 0
    assert told == [True, False]
    assert buffer.count()["readings"] == 150
    buffer.close()
