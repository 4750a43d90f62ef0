"""Processes die and peers go away under load; afterwards every reading is in the TSDB
exactly once, every violation episode is exactly one NC, and every process stops cleanly.

The TSDB and central API outages last OUTAGE seconds, four times the writers' maximum
backoff (`influxdb.max_backoff` and `forward.max_backoff`, lowered to MAX_BACKOFF in the
chain's site.yaml; 60 s by default): the writers reach their longest wait (0.5 s doubling)
and keep retrying at it, and once the peer is back they recover within about that wait.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable

import pytest

from tests.faults.chain import MAX_BACKOFF, Chain, Load
from tests.faults.checks import assert_invariants
from tests.integration.mosquitto import Publisher

OUTAGE = 4 * MAX_BACKOFF
KILLS = 20
RECOVERY = MAX_BACKOFF + 3.0
"""Seconds from a peer's return to the writer's "again" line: its longest wait, plus the
time to send. With the default maximum, after OUTAGE the next try could be 6 s away."""


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
    back = time.monotonic()
    assert chain.agent is not None
    chain.agent.wait_for_output("cannot write to")
    chain.agent.wait_for_output(f"writing to {chain.tsdb.url} again", timeout=RECOVERY)
    assert time.monotonic() - back < RECOVERY
    assert_invariants(chain, load)


def test_central_api_down_then_back(chain: Chain, start_load: Callable[..., Load]) -> None:
    load = start_load()
    time.sleep(1)
    assert chain.api is not None and chain.api.stop() == 0, chain.output()
    time.sleep(OUTAGE)
    chain.start_api()
    back = time.monotonic()
    assert chain.agent is not None
    chain.agent.wait_for_output("cannot deliver NC events yet")
    chain.agent.wait_for_output("NC events flowing again", timeout=RECOVERY)
    assert time.monotonic() - back < RECOVERY
    assert_invariants(chain, load)


def test_a_reading_the_engine_cannot_judge_stops_nothing(
        chain: Chain, start_load: Callable[..., Load]) -> None:
    """(a - b) ** 0.5 with a < b is not a real number: that reading is refused, alone."""
    load = start_load()
    time.sleep(1)
    ts = int(time.time() * 1000)
    publisher = Publisher(chain.broker.port)
    publisher.publish([("mix/MIX-1/state", json.dumps({"t": ts, "a": 1, "b": 4}))])
    publisher.close()
    assert chain.agent is not None
    deadline = time.monotonic() + 30
    while True:  # stored, so acknowledged, and written: it is in the TSDB
        stored = {(dict(labels)["metric"], value) for (name, labels, at), value
                  in chain.tsdb.samples()
                  if name == "patrol_value" and at == ts and dict(labels)["asset"] == "MIX-1"}
        if stored == {("a", 1.0), ("b", 4.0)}:
            break
        assert chain.agent.proc.poll() is None, chain.output(1)
        assert time.monotonic() < deadline, f"the poison reading never landed: {stored}"
        time.sleep(0.2)
    assert_invariants(chain, load)


def test_central_api_killed_5_times_under_load(chain: Chain,
                                               start_load: Callable[..., Load]) -> None:
    """An event applied but not answered is sent again: applied once, by its id."""
    rng = random.Random(5)
    load = start_load()
    for _ in range(5):
        time.sleep(rng.uniform(0.2, 1.5))
        assert chain.api is not None and chain.api.stop(signal.SIGKILL) == -signal.SIGKILL
        chain.start_api()
    assert_invariants(chain, load)
