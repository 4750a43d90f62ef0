"""Fixtures for the fault tests: a running chain, and a load on it.

`@pytest.mark.buffer_tmpfs("16m")` puts the agent's buffer directory on a tmpfs of that
size (mounted before the agent starts, unmounted after the test): a disk that really
fills up. The suite runs as root, so the mount needs no skip.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.chain import Chain, Load


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "buffer_tmpfs(size): the agent's buffer on a tmpfs")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the duration."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                   check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


@pytest.fixture
def chain(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Chain]:
    """Broker, TSDB, Modbus device, `patrol api` and `patrol agent`, all running."""
    with contextlib.ExitStack() as stack:
        mark = request.node.get_closest_marker("buffer_tmpfs")
        if mark is not None:
            stack.enter_context(tmpfs(tmp_path / "edge" / "buffer", mark.args[0]))
        parts = Chain(tmp_path)
        stack.callback(parts.close)  # before the unmount: nothing may hold the tmpfs
        yield parts.start()


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
