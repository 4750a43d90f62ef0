"""Processes die and peers go away under load; afterwards every reading is in the TSDB
exactly once, every violation episode is exactly one NC, and every process stops cleanly.

The outages last OUTAGE seconds: several backoff steps of the TSDB writer and of the
forwarder (0.5 s doubling), but not past their 60 s maximum, which no setting lowers
(`agent.tsdb.MAX_BACKOFF`, `Forwarder(max_backoff=)`): a minute-long outage per test would
not fit the suite's time.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.chain import Chain, Load
from tests.faults.checks import assert_invariants

OUTAGE = 8.0
KILLS = 20


@pytest.mark.timeout(180)
def test_agent_killed_20_times_under_load_loses_and_doubles_nothing(
        chain: Chain, start_load: Callable[..., Load]) -> None:
    rng = random.Random(12)
    load = start_load()
    for round_ in range(KILLS):
        assert chain.agent is not None
        if round_ % 2:  # while running: storing, judging, sending, acknowledging
            chain.agent.wait_for_output("patrol agent started")
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # anywhere from the start: opening the buffer, restoring, connecting
            time.sleep(rng.uniform(0.1, 1.5))
        chain.kill_agent()
        assert chain.agent.proc.returncode == -signal.SIGKILL, chain.output(1)
        chain.start_agent(wait=False)
    assert chain.agent is not None
    chain.agent.wait_for_output("patrol agent started")
    assert_invariants(chain, load)
    restored = sum("rule state restored" in run.output for run in chain.runs)
    assert restored >= KILLS // 2  # the kills came after state was saved, not only at start


def test_broker_restarts_under_load(chain: Chain, start_load: Callable[..., Load]) -> None:
    load = start_load()
    for _ in range(2):
        time.sleep(2)
        chain.broker.restart()  # SIGTERM: sessions and queued QoS 1 messages saved
    time.sleep(1)
    assert_invariants(chain, load)
    assert chain.agent is not None
    assert chain.agent.output.count("mqtt: connected to") >= 3


def test_tsdb_down_then_back(chain: Chain, start_load: Callable[..., Load]) -> None:
    load = start_load()
    time.sleep(1)
    chain.tsdb.stop()
    time.sleep(OUTAGE)
    chain.tsdb.start()
    assert chain.agent is not None
    chain.agent.wait_for_output("cannot write to")
    assert_invariants(chain, load)
    assert f"writing to {chain.tsdb.url} again" in chain.agent.output


def test_central_api_down_then_back(chain: Chain, start_load: Callable[..., Load]) -> None:
    load = start_load()
    time.sleep(1)
    assert chain.api is not None and chain.api.stop() == 0, chain.output()
    time.sleep(OUTAGE)
    chain.start_api()
    assert chain.agent is not None
    chain.agent.wait_for_output("cannot deliver NC events yet")
    assert_invariants(chain, load)
    assert "NC events flowing again" in chain.agent.output
