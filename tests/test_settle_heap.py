"""The agent's heap is frozen once loaded (`agent.runtime.settle_heap`): the garbage
collector stops walking the site and the engine, and a reload still lets the replaced
engine go, cycles and all."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.buffer import Buffer
from agent.pipeline import Pipeline
from agent.runtime import restored_engine, settle_heap, watch_standards
from agent.site import load_site


class Node:
    """An object in a reference cycle: only the collector frees it, never a refcount."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of this worker's tests run with the collector as usual


def test_a_settled_heap_is_out_of_sight_until_it_is_settled_again() -> None:
    node = Node()
    gone = weakref.ref(node)
    settle_heap()
    assert gc.get_freeze_count() > 0
    del node
    gc.collect()
    assert gone() is not None  # frozen: a full collection did not look at it
    settle_heap()
    assert gone() is None


STANDARD = """\
standards:
  - {{id: T, version: {version}, title: T, metric: t, check: {{max: 30}}, severity: minor,
     rectify_within: 1d}}
"""


def test_a_reload_lets_the_replaced_engine_go(tmp_path: Path) -> None:
    (tmp_path / "standards.yaml").write_text(STANDARD.format(version=1))
    (tmp_path / "site.yaml").write_text(
        "site: {id: heap}\nassets: [{id: a1, type: room}]\nstandards: [standards.yaml]\n"
        "buffer: {path: buffer.sqlite}\n")
    site = load_site(tmp_path / "site.yaml")
    buffer = Buffer(tmp_path / "buffer.sqlite")
    pipeline = Pipeline(restored_engine(site, buffer), buffer)
    pipeline.engine.itself = pipeline.engine  # were it kept frozen, this cycle would keep it
    old = weakref.ref(pipeline.engine)
    settle_heap()  # as at the agent's start

    async def reload() -> None:
        watching = asyncio.create_task(watch_standards(site, pipeline, every=0.05))
        await asyncio.sleep(0.2)
        (tmp_path / "standards.yaml").write_text(STANDARD.format(version=2))
        for _ in range(200):  # 10 s at most
            if old() is not pipeline.engine:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        watching.cancel()

    try:
        asyncio.run(reload())
    finally:
        buffer.close()
    assert [s.version for s in site.standards] == [2]
    assert old() is None
