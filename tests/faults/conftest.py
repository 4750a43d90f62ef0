"""Fixtures for the fault tests: a running chain, and a load on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.chain import Chain, Load


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    """Broker, TSDB, Modbus device, `patrol api` and `patrol agent`, all running."""
    parts = Chain(tmp_path)
    try:
        yield parts.start()
    finally:
        parts.close()


@pytest.fixture
def start_load(chain: Chain) -> Iterator[Callable[..., Load]]:
    """Starts the numbered readings on the chain's broker; closed after the test."""
    loads: list[Load] = []

    def start(**kwargs: int) -> Load:
        loads.append(Load(chain.broker.port, **kwargs).start())
        return loads[-1]

    yield start
    for load in loads:
        load.close()
