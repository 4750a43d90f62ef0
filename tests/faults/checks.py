"""What must hold after every fault: readings exactly once, one NC per episode, no hang."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from tests.faults.chain import GRACE, STANDARD, SUPPLY, SUPPLY_VALUE, Chain, Load
from tests.integration.conftest import Api


def tsdb_readings(chain: Chain) -> tuple[dict[tuple[str, int], float], list[Any], list[float]]:
    """({(tank, ts): value} of the load's metric, samples stored twice, Modbus values)."""
    samples = chain.tsdb.samples()
    twice = [key for key, n in Counter(key for key, _ in samples).items() if n > 1]
    temps: dict[tuple[str, int], float] = {}
    supply: list[float] = []
    for (name, labels, ts), value in samples:
        tags = dict(labels)
        if name == "patrol_value" and tags.get("metric") == "temp":
            temps[(tags["asset"], ts)] = value
        elif name == "patrol_value" and tags.get("metric") == SUPPLY.metric:
            supply.append(value)
    return temps, twice, supply


def wait_for_readings(chain: Chain, expected: dict[tuple[str, int], float],
                      may_miss: int = 0, timeout: float = 60) -> None:
    """Until at most `may_miss` expected readings are not in the TSDB (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got, _, _ = tsdb_readings(chain)
        if len(expected.keys() - got.keys()) <= may_miss or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def assert_readings_once(chain: Chain, expected: dict[tuple[str, int], float], *,
                         may_miss: int = 0, optional: frozenset[tuple[str, int]] = frozenset()
                         ) -> None:
    """Every expected reading in the TSDB exactly once per (series, ts), with its value.

    `may_miss`: how many readings the agent said it dropped (a full disk); `optional`:
    readings that may be absent (lost with a corrupt buffer), but never doubled or wrong.
    """
    required = {k: v for k, v in expected.items() if k not in optional}
    wait_for_readings(chain, required, may_miss)
    got, twice, supply = tsdb_readings(chain)
    missing = sorted(required.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    wrong = {k: (got[k], v) for k, v in expected.items() if k in got and got[k] != v}
    assert not twice, f"{len(twice)} samples stored twice, e.g. {twice[:3]}"
    assert len(missing) <= may_miss and not extra and not wrong, (
        f"{len(missing)} missing (at most {may_miss} dropped; e.g. {missing[:3]}), "
        f"{len(extra)} not published (e.g. {extra[:3]}), {len(wrong)} wrong "
        f"(e.g. {list(wrong.items())[:3]})\n{chain.output()}")
    assert supply and set(supply) == {SUPPLY_VALUE}, f"Modbus readings: {set(supply)}"


def all_ncs(chain: Chain) -> list[dict[str, Any]]:
    api = Api(chain.api_url + "/api/v1", chain.reader_token)
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, body = api.get(f"/nonconformances?limit=500{cursor}")
        assert status == 200, body
        items += body["items"]
        if not body.get("next_cursor"):
            return items
        cursor = f"&cursor={body['next_cursor']}"


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def wait_for_ncs(chain: Chain, episodes: set[tuple[str, int]], timeout: float = 60
                 ) -> list[dict[str, Any]]:
    """Every NC, once each of `episodes` has a closed one (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        items = all_ncs(chain)
        closed = {(nc["asset_id"], ms(nc["detected_at"])) for nc in items
                  if nc["state"] == "closed"}
        if episodes <= closed or time.monotonic() > deadline:
            return items
        time.sleep(0.5)


def assert_one_nc_per_episode(chain: Chain, episodes: set[tuple[str, int]], *,
                              exact: bool = True,
                              wait_for: set[tuple[str, int]] | None = None) -> None:
    """Each episode is one NC, opened at its first violating reading and closed by the
    recovery; no other NC (with `exact=False`, others may exist but none twice).
    `wait_for`: the episodes whose NCs must be in before looking (default: all)."""
    items = wait_for_ncs(chain, episodes if wait_for is None else wait_for)
    opened = Counter((nc["asset_id"], ms(nc["detected_at"])) for nc in items)
    twice = [key for key, n in opened.items() if n > 1]
    assert not twice, f"episodes with more than one NC: {twice[:5]}"
    assert all(nc["standard_id"] == STANDARD for nc in items), [
        nc for nc in items if nc["standard_id"] != STANDARD][:3]
    missing = sorted(episodes - opened.keys())
    extra = sorted(opened.keys() - episodes) if exact else []
    assert not missing and not extra, (
        f"{len(episodes)} episodes, {len(items)} NCs: {len(missing)} episodes without an NC "
        f"(e.g. {missing[:3]}), {len(extra)} NCs of no episode (e.g. {extra[:3]})\n"
        f"{chain.output()}")
    ours = [nc for nc in items if (nc["asset_id"], ms(nc["detected_at"])) in episodes]
    bad = [nc for nc in ours if nc["state"] != "closed" or nc["occurrences"] != 1]
    assert not bad, f"{len(bad)} NCs not closed once, e.g. {bad[:2]}"


def assert_stops_cleanly(chain: Chain) -> None:
    """Each process ends on SIGTERM within its grace period with exit status 0."""
    outputs = chain.output()
    codes = chain.stop_all()
    assert codes == dict.fromkeys(codes, 0), (
        f"exit codes (None: still running {GRACE:g}s after SIGTERM): {codes}\n{outputs}")
    assert chain.agent is not None and "Traceback" not in chain.agent.output, outputs


def assert_invariants(chain: Chain, load: Load, *, may_miss: int = 0) -> None:
    """The three checks after a scenario: readings once, one NC per episode, clean stop."""
    load.finish()
    assert_readings_once(chain, load.readings(), may_miss=may_miss)
    assert_one_nc_per_episode(chain, load.episodes())
    assert_stops_cleanly(chain)
