"""Data-driven scenarios: one folder per case under tests/rules/cases/ (format in its README).

Each case replays `readings.jsonl` (readings and directives: tick, restart, reload,
snapshot) through a real `Engine` built from `case.yaml` and `standards.yaml`, and compares
the events it emits, in order, with `expected.jsonl`. An expected line is a subset of the
event's wire form (`Event.to_dict()`, `Snapshot.to_dict()`), timestamps written in ISO.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.reading import Reading, bad
from common.config_types import parse_duration
from rules.engine import Engine
from rules.events import Event, Snapshot, iso
from rules.standard import Asset, Standard, StandardsFile

CASES = Path(__file__).parent / "cases"
REQUIRED = ("type", "asset_id", "standard_id", "at", "episode_start")
TIME_KEYS = ("at", "episode_start", "since")
EVIDENCE_SHORTHAND = ("value", "limit", "stats", "readings")
TOLERANCE = 1e-6
ANY = "*"


def epoch(value: Any) -> float:
    """An ISO timestamp (string, or a datetime YAML already parsed) -> epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r}: timestamps must carry a zone (Z or +hh:mm)")
    return moment.timestamp()


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line; blank lines and `#` comments skipped."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            try:
                rows.append((number, json.loads(text)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path.name}:{number}: {exc}") from None
    return rows


def load_standards(path: Path) -> list[Standard]:
    """A real standards file (SPEC section 4), validated as the agent would."""
    return StandardsFile.model_validate(yaml.safe_load(path.read_text())).standards


@dataclass
class Case:
    name: str
    folder: Path
    meta: dict[str, Any]

    @property
    def timezone(self) -> str:
        return str(self.meta.get("site", {}).get("timezone", "UTC"))

    @property
    def site_id(self) -> str:
        return str(self.meta.get("site", {}).get("id", "tower-a"))

    def assets(self, items: list[dict[str, Any]] | None = None) -> list[Asset]:
        rows = items if items is not None else self.meta.get("assets", [{"id": "CH-1"}])
        return [Asset.model_validate(row) for row in rows]


def load_case(folder: Path) -> Case:
    meta_path = folder / "case.yaml"
    meta = yaml.safe_load(meta_path.read_text()) if meta_path.exists() else {}
    return Case(folder.name, folder, meta or {})


def reading(row: dict[str, Any]) -> Reading:
    value = row.get("value")
    value = math.nan if value is None or value == "nan" else float(value)
    quality = {"quality": bad(row["bad"])} if "bad" in row else {}
    return Reading(row["asset"], row["metric"], value, epoch(row["t"]), **quality)


def wire(item: Event | Snapshot) -> dict[str, Any]:
    """The wire form, with timestamps as epoch seconds so expected ISO forms compare."""
    body = item.to_dict()
    for key in TIME_KEYS:
        if key in body:
            body[key] = epoch(body[key])
    evidence = body.get("evidence")
    if evidence is not None:
        evidence["readings"] = [[epoch(t), v] for t, v in evidence["readings"]]
    return body


def normalise_expected(row: dict[str, Any], where: str) -> dict[str, Any]:
    row = dict(row)
    if row.get("type") == "compliance_snapshot":
        for key in ("type", "at"):
            if key not in row:
                raise ValueError(f"{where}: a snapshot line needs {key}")
    else:
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise ValueError(f"{where}: an event line needs {', '.join(missing)}")
    for key in TIME_KEYS:
        if key in row and row[key] != ANY:
            row[key] = epoch(row[key])
    evidence = dict(row.pop("evidence", {}))
    for key in EVIDENCE_SHORTHAND:
        if key in row:
            evidence[key] = row.pop(key)
    if "readings" in evidence:
        evidence["readings"] = [[epoch(t), v] for t, v in evidence["readings"]]
    stats = evidence.get("stats")
    if isinstance(stats, dict):  # `*_ts` statistics may be written in ISO
        evidence["stats"] = {k: epoch(v) if k.endswith("_ts") and isinstance(v, str) else v
                             for k, v in stats.items()}
    if evidence:
        row["evidence"] = evidence
    return row


def mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where `expected` is not a subset of `actual` (dicts by key, lists item by item;
    `"*"` matches anything)."""
    if expected == ANY:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        if expected.get("type") == "compliance_snapshot" and "items" in expected:
            expected = dict(expected)
            items = expected.pop("items")
            found = {(i["asset_id"], i["standard_id"]): i for i in actual.get("items", [])}
            for item in items:
                key = (item["asset_id"], item["standard_id"])
                if key not in found:
                    return f"{path}items: no item for {key}"
                if (problem := mismatch(item, found[key], f"{path}items{list(key)}.")):
                    return problem
        for key, value in expected.items():
            if key not in actual:
                return f"{path}{key}: missing (have {sorted(actual)})"
            if (problem := mismatch(value, actual[key], f"{path}{key}.")):
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list | tuple) or len(expected) != len(actual):
            return f"{path.rstrip('.')}: expected {expected!r}, got {actual!r}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            if (problem := mismatch(e, a, f"{path}{index}.")):
                return problem
        return None
    if isinstance(expected, int | float) and not isinstance(expected, bool) \
            and isinstance(actual, int | float) and not isinstance(actual, bool):
        if math.isclose(expected, actual, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
            return None
    elif expected == actual:
        return None
    return f"{path.rstrip('.')}: expected {expected!r}, got {actual!r}"


def describe(body: dict[str, Any]) -> str:
    """One log line per emitted item, for failure messages."""
    if body["type"] == "compliance_snapshot":
        states = {f"{i['asset_id']}/{i['standard_id']}": (i["state"], i["seconds"])
                  for i in body["items"]}
        return f"compliance_snapshot at={iso(body['at'])} {states}"
    return (f"{body['type']} {body['asset_id']}/{body['standard_id']} at={iso(body['at'])} "
            f"episode_start={iso(body['episode_start'])} value={body['evidence']['value']}")


class Runner:
    """Plays one case's readings.jsonl into an engine and collects what it emits."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.rows = read_jsonl(case.folder / "readings.jsonl")
        self.standards = load_standards(case.folder / "standards.yaml")
        self.assets = case.assets()
        started = case.meta.get("started")
        self.clock = epoch(started) if started is not None else self._first_time()
        self.engine = Engine(case.site_id, self.assets, self.standards,
                             timezone=case.timezone, started=self.clock)
        self.emitted: list[dict[str, Any]] = []

    def _first_time(self) -> float:
        for _, row in self.rows:
            for key in ("t", "tick", "snapshot"):
                if key in row:
                    return epoch(row[key])
        raise ValueError(f"{self.case.name}: no timestamp to start the engine at")

    def _emit(self, items: list[Event]) -> None:
        # Within one engine call the order of simultaneous events of different pairs is
        # the engine's business: sort by time, then pair (stable, so one pair keeps its own).
        bodies = [wire(e) for e in items]
        bodies.sort(key=lambda b: (b["at"], b["asset_id"], b["standard_id"]))
        self.emitted.extend(bodies)

    def run(self) -> list[dict[str, Any]]:
        batch: list[Reading] = []
        for number, row in self.rows:
            if "t" in row:
                batch.append(reading(row))
                continue
            if batch:
                self._emit(self.engine.observe(batch))
                batch = []
            try:
                self._directive(row)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"readings.jsonl:{number}: {exc}") from exc
        if batch:
            self._emit(self.engine.observe(batch))
        return self.emitted

    def _directive(self, row: dict[str, Any]) -> None:
        if "tick" in row:
            now = epoch(row["tick"])
            until = epoch(row["until"]) if "until" in row else now
            every = parse_duration(row.get("every", "1s"))
            while now <= until + 1e-9:
                self._emit(self.engine.tick(now))
                self.clock = now
                now += every
        elif "snapshot" in row:
            self.clock = epoch(row["snapshot"])
            self.emitted.append(wire(self.engine.snapshot(self.clock)))
        elif "restart" in row:
            # the state goes through JSON, as the agent stores it
            saved = json.loads(json.dumps(self.engine.state()))
            started = self.clock if row["restart"] is True else epoch(row["restart"])
            self.engine = Engine(self.case.site_id, self.assets, self.standards,
                                 timezone=self.case.timezone, started=started)
            restored = self.engine.restore(saved)
            if "restored" in row and restored != row["restored"]:
                raise AssertionError(f"restored {restored} pairs, expected {row['restored']}")
            self.clock = started
        elif "reload" in row:
            self.standards = load_standards(self.case.folder / row["reload"])
            if "assets" in row:
                self.assets = self.case.assets(row["assets"])
            now = epoch(row["at"]) if "at" in row else self.clock
            self.engine = self.engine.reloaded(self.assets, self.standards, now)
            self.clock = now
        else:
            raise ValueError(f"unknown line {row!r}: a reading has t, a directive is one of "
                             "tick, snapshot, restart, reload")


def case_params() -> list[Any]:
    params = []
    for folder in sorted(p for p in CASES.iterdir() if p.is_dir()):
        case = load_case(folder)
        marks = []
        if case.meta.get("xfail"):
            marks.append(pytest.mark.xfail(strict=True, reason=str(case.meta["xfail"])))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


@pytest.mark.parametrize("case", case_params())
def test_case(case: Case) -> None:
    runner = Runner(case)
    actual = runner.run()
    rows = read_jsonl(case.folder / "expected.jsonl")
    expected = [normalise_expected(row, f"expected.jsonl:{n}") for n, row in rows]
    log = "\n".join(f"  {i + 1}: {describe(b)}" for i, b in enumerate(actual)) or "  (none)"
    assert len(actual) == len(expected), (
        f"{len(expected)} events expected, {len(actual)} emitted:\n{log}")
    for (number, _), want, got in zip(rows, expected, actual, strict=True):
        problem = mismatch(want, got)
        assert problem is None, f"expected.jsonl:{number}: {problem}\nemitted:\n{log}"
    for key, want in case.meta.get("expect", {}).items():
        have = getattr(runner.engine, key)
        assert have == want, f"engine.{key} is {have}, expected {want}"


def test_there_are_enough_cases() -> None:
    folders = [p for p in CASES.iterdir() if p.is_dir()]
    assert len(folders) >= 40
    for folder in folders:
        for name in ("standards.yaml", "readings.jsonl", "expected.jsonl"):
            assert (folder / name).exists(), f"{folder.name} has no {name}"


def test_the_runner_reports_a_wrong_expectation(tmp_path: Path) -> None:
    folder = tmp_path / "wrong"
    folder.mkdir()
    source = CASES / "range_max_only"
    for name in ("case.yaml", "standards.yaml", "readings.jsonl"):
        (folder / name).write_text((source / name).read_text())
    right = (source / "expected.jsonl").read_text()
    (folder / "expected.jsonl").write_text(right.replace('"value": 8.4', '"value": 8.5'))
    with pytest.raises(AssertionError, match=r"evidence.value: expected 8.5, got 8.4"):
        test_case(load_case(folder))
    (folder / "expected.jsonl").write_text(right.splitlines()[0] + "\n")
    with pytest.raises(AssertionError, match="1 events expected, 2 emitted"):
        test_case(load_case(folder))
