"""A deterministic history for the report tests and `python -m bench.reports`.

`seed(db, Spec(...))` writes, for a fixed `end` and `days` before it:

- `assets` assets on two sites (tower-a, and every fifth asset on tower-b), of five types,
  in four departments (three of them Chinese names: the CSV must carry them intact), each
  watched by `standards_per_asset` of `standards` standards (four categories, three
  severities, one standard without a due time, one that overrides the department);
- per (asset, standard) pair, NCs one after another (never two open at once, as the
  store's one-open-NC constraint demands), each taking a path through the lifecycle:
  acknowledged, started, rectified on time or late (with a root-cause category),
  verified by a person (pass, or fail and reopened), verified or reopened by sensor,
  closed on recovery, reopened after closing, cancelled as a false alarm, chattering,
  recurring (an NC closed within 90 days before), assigned, overdue, and still open at
  `end` wherever its path had not finished by then; some manual findings too, and bursts
  of NCs on many pairs within minutes (floods);
- a compliance row per pair and UTC day (ok, violating, no-data and inactive seconds),
  a few days missing (no snapshot at all), written with their months' roll-up by
  `api.ingest.add_seconds`, as the API writes a snapshot's seconds;
- two out-of-service windows (assets A-0000 and A-0002, in the last two weeks).

Why direct inserts and not `api.lifecycle` with a driven clock: 90 days x 50 assets is
thousands of NCs and tens of thousands of changes, and the bench needs 100,000s; through
the lifecycle (a transaction, a feed row and a public-form render per change) that is
minutes, not seconds. The rows are made to the lifecycle's shape from its own tables:
every step is a row of `api.workflow.TRANSITIONS`, whose `sources` the generator checks
and whose `target` and `recorded_as` give the history's to-state and action; the actor is
a person's name and role for people's actions, the agent's for engine events and "patrol"
/ system for the API's own changes, as `api.ingest` and `api.background` record them; the
NC columns (state, open_slot, closed_at, rectified_at, reopen_count, verification,
condition, root_cause_category, ...) are set as `transition` and its handlers set them,
and the report's facts by the lifecycle's own `api.nc_facts.kept_facts`.
tests/test_reports_seed.py drives the people's and the engine's paths (verified, failed
then fixed, cancelled, reopened after closing, assigned, chattering, recovered) through
the real lifecycle and compares the histories and NC columns with these; the sensor's
verification paths rest on the TRANSITIONS checks above.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text

from api.ingest import add_seconds
from api.nc_facts import kept_facts
from api.store import Database, HistoryEntry, Nonconformance, OutOfService, derived
from api.workflow import OPEN_STATES, TRANSITIONS, UNRECTIFIED
from common.vocabulary import ROOT_CAUSE_CATEGORIES

SITES = ("tower-a", "tower-b")
TYPES = ("chiller", "ahu", "pump", "room", "meter")
DEPARTMENTS = ("工程部", "品质部", "安保部", "engineering")
CATEGORIES = ("equipment", "environment", "equipment", "energy", "safety")
SEVERITIES = ("major", "minor", "critical", "major", "minor")
AGENT = ("gateway", "agent")
SYSTEM = ("patrol", "system")
ENGINEER = ("li.wei", "engineer")
QUALITY = ("zhang.min", "quality")
HOUR = 3600.0
DAY = 86400.0

PATHS = {
    # name: weight
    "verified": 22, "sensor_verified": 14, "failed_then_fixed": 8, "sensor_reopened": 6,
    "cancelled": 7, "recovered": 10, "reopened_after_close": 4, "chattering": 5,
    "neglected": 6, "acknowledged_only": 5, "rectified_pending": 5,
}


@dataclass(frozen=True)
class Spec:
    end: datetime = datetime(2026, 11, 30, tzinfo=UTC)
    days: int = 90
    assets: int = 50
    standards: int = 10
    standards_per_asset: int = 4
    ncs_per_pair: float = 4.0
    """NCs per pair over `days`, on average."""
    bursts: int = 6
    manual_per_asset: float = 0.5
    pace: float = 1.0
    """Every delay of a path is multiplied by it: below 1, NCs are handled faster and a
    pair can raise more of them (the bench's 100 per pair and year)."""
    seed: int = 20261130

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass(frozen=True)
class Asset:
    site: str
    id: str
    type: str
    department: str


@dataclass(frozen=True)
class Standard:
    id: str
    category: str
    severity: str
    rectify_within: float | None
    verify_for: float
    department: str | None
    on_recovery: str


def catalog(spec: Spec) -> tuple[list[Asset], list[Standard]]:
    assets = [Asset(SITES[1] if i % 5 == 4 else SITES[0], f"A-{i:04d}", TYPES[i % len(TYPES)],
                    DEPARTMENTS[i % len(DEPARTMENTS)]) for i in range(spec.assets)]
    standards = [Standard(f"STD-{j:02d}", CATEGORIES[j % len(CATEGORIES)],
                          SEVERITIES[j % len(SEVERITIES)],
                          None if j == 3 else (24 * HOUR if j % 2 else 72 * HOUR),
                          HOUR, "品质部" if j == 5 else None,
                          "close" if j % 4 == 1 else "keep_open")
                 for j in range(spec.standards)]
    return assets, standards


def pairs(spec: Spec) -> list[tuple[Asset, Standard]]:
    assets, standards = catalog(spec)
    return [(asset, standards[(i + j) % len(standards)]) for i, asset in enumerate(assets)
            for j in range(spec.standards_per_asset)]


@dataclass
class Nc:
    """One NC being made: its row and its history, step by step."""

    pk: int
    row: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.row["state"]


class Generator:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.next_pk = 1
        self.next_history = 1

    # --- one change ----------------------------------------------------------------

    def change(self, nc: Nc, name: str, actor: tuple[str, str], at: datetime, *,
               result: str | None = None, changes: dict[str, Any] | None = None,
               note: str | None = None) -> None:
        spec = TRANSITIONS[name]
        before = nc.row["state"] if nc.history else None
        assert before in spec.sources, f"{name} from {before}"
        to = spec.target(before, result)
        row = nc.row
        if to != before:
            if to == "open" and before is not None:
                row["reopen_count"] += 1
            row["state"] = to
            row["open_slot"] = "open" if to in OPEN_STATES else None
            row["closed_at"] = at if to == "closed" else None
        diff = {"state": [before, to]} if to != before else {}
        nc.history.append({
            "id": self.next_history, "nc_pk": nc.pk, "at": at, "actor": actor[0],
            "role": actor[1], "action": spec.recorded_as, "from_state": before,
            "to_state": to, "changes": {**diff, **(changes or {})}, "note": note,
            "event_id": None})
        self.next_history += 1
        row.update(kept_facts(row, action=spec.recorded_as, from_state=before, to_state=to,
                              role=actor[1], at=at))
        row["updated_at"] = at

    # --- NCs -------------------------------------------------------------------------

    def raise_nc(self, asset: Asset, standard: Standard | None, at: datetime,
                 recurring: bool) -> Nc:
        due = (at + timedelta(seconds=standard.rectify_within)
               if standard is not None and standard.rectify_within else None)
        if standard is None:
            due = at + timedelta(days=3)
        row = {
            "pk": self.next_pk, "site_id": asset.site, "asset_id": asset.id,
            "standard_id": standard.id if standard else None,
            "standard_version": 1 if standard else None,
            "metric": "value" if standard else None,
            "title": f"{standard.id if standard else 'Finding'} on {asset.id}",
            "clause": "", "category": standard.category if standard else "safety",
            "severity": standard.severity if standard else "minor",
            "department": (standard.department if standard else None) or asset.department,
            "assignee": None, "asset_type": asset.type,
            "standard_kind": "range" if standard else None, "root_cause_category": None,
            "description": None, "state": None, "open_slot": None,
            "condition": "violating", "detected_at": at, "cleared_at": None,
            "due_at": due, "closed_at": None, "occurrences": 1, "reopen_count": 0,
            "recurring": recurring, "source": "auto" if standard else "manual",
            "evidence": {"value": 1.0}, "rectification": None, "verification": None,
            "external_ref": None,
            "standard_info": {"verify_for": standard.verify_for,
                              "on_recovery": standard.on_recovery} if standard else None,
            "rectified_at": None, "rectified_by": None, "verify_progress": None,
            "overdue_notified": False, "updated_at": at, "version": 1,
            "acknowledged_at": None, "first_verification": None, "closed_by_sensor": False,
            "chattered": False}
        self.next_pk += 1
        nc = Nc(row["pk"], row)
        self.change(nc, "raise", AGENT if standard else QUALITY, at,
                    changes={"recurs": ["NC-earlier"]} if recurring else None)
        return nc

    def step(self, nc: Nc, name: str, at: datetime, **kwargs: Any) -> bool:
        """Apply one step unless `end` came first; marks overdue on the way."""
        end = self.spec.end
        self._overdue(nc, min(at, end))
        if at >= end:
            return False
        row = nc.row
        if name == "rectify":
            category = self.rng.choice(ROOT_CAUSE_CATEGORIES)
            row["rectification"] = {"action": "fixed", "root_cause": "worn seal",
                                    "root_cause_category": category, "by": ENGINEER[0],
                                    "at": at.isoformat()}
            row["rectified_at"], row["rectified_by"] = at, 2
            row["verification"], row["root_cause_category"] = None, category
            self.change(nc, "rectify", ENGINEER, at)
        elif name in ("acknowledge", "start", "assign"):
            if name == "assign":
                row["assignee"] = "wang.fang"
            self.change(nc, name, ENGINEER, at)
        elif name == "verify":
            row["verification"] = {"method": "manual", "result": kwargs["result"],
                                   "by": QUALITY[0], "at": at.isoformat()}
            self.change(nc, "verify", QUALITY, at, result=kwargs["result"])
        elif name in ("cancel", "reopen"):
            if name == "reopen":
                row["verification"] = None
            self.change(nc, name, QUALITY, at, note="why")
        elif name == "verify_by_sensor":
            row["verification"] = {"method": "sensor", "result": "pass"}
            self.change(nc, name, SYSTEM, at)
        elif name == "reopen_by_sensor":
            row["verification"] = {"method": "sensor", "result": "fail"}
            row["condition"], row["cleared_at"] = "violating", None
            row["occurrences"] += 1
            self.change(nc, name, SYSTEM, at)
        elif name in ("clear", "close_on_recovery"):
            old = row["condition"]
            row["condition"], row["cleared_at"] = "normal", at
            self.change(nc, name, AGENT, at, changes={"condition": [old, "normal"]})
        elif name == "chattering":
            row["condition"], row["occurrences"] = "chattering", row["occurrences"] + 1
            self.change(nc, "occurrence", AGENT, at,
                        changes={"condition": ["violating", "chattering"]})
        elif name == "occurrence":
            row["occurrences"] += 1
            self.change(nc, "occurrence", AGENT, at)
        else:
            raise ValueError(name)
        return True

    def _overdue(self, nc: Nc, until: datetime) -> None:
        due = nc.row["due_at"]
        if (due is not None and due < until and nc.state in UNRECTIFIED
                and not nc.row["overdue_notified"]):
            nc.row["overdue_notified"] = True
            self.change(nc, "overdue", SYSTEM, due, changes={"overdue": [False, True]})

    def hours(self, low: float, high: float) -> timedelta:
        return timedelta(hours=self.rng.uniform(low, high) * self.spec.pace)

    def days(self, low: float, high: float) -> timedelta:
        return timedelta(days=self.rng.uniform(low, high) * self.spec.pace)

    def rectify_time(self, nc: Nc, after: datetime) -> datetime:
        """On time two times in three, late otherwise (or any time without a due date)."""
        due = nc.row["due_at"]
        if due is None or due <= after:
            return after + self.hours(0.5, 30)
        if self.rng.random() < 0.67:
            return after + (due - after) * self.rng.uniform(0.1, 0.95)
        return due + self.hours(1, 48)

    def follow(self, nc: Nc, path: str, standard: Standard | None) -> datetime | None:
        """Take `nc` along `path`; the time it ended, or None if still open at `end`."""
        t = nc.row["detected_at"]
        steps: list[tuple[str, datetime, dict[str, Any]]] = []

        def then(name: str, low: float, high: float, **kwargs: Any) -> None:
            nonlocal t
            t = t + self.hours(low, high)
            steps.append((name, t, kwargs))

        def fix(name: str = "rectify") -> None:
            nonlocal t
            t = self.rectify_time(nc, t)
            steps.append((name, t, {}))

        by_sensor = standard is not None
        if path == "verified" or (not by_sensor and path not in ("cancelled", "neglected")):
            then("acknowledge", 0.1, 6)
            if self.rng.random() < 0.5:
                then("start", 0.1, 3)
            if self.rng.random() < 0.3:
                then("assign", 0.1, 2)
            fix()
            then("verify", 1, 30, result="pass")
        elif path == "sensor_verified":
            then("acknowledge", 0.1, 4)
            fix()
            then("clear", 0.05, 1)
            then("verify_by_sensor", 1, 2)
        elif path == "failed_then_fixed":
            fix()
            then("verify", 1, 20, result="fail")
            then("acknowledge", 0.1, 3)
            fix()
            then("verify", 1, 20, result="pass")
        elif path == "sensor_reopened":
            then("acknowledge", 0.1, 4)
            fix()
            then("reopen_by_sensor", 0.2, 0.9)
            fix()
            then("clear", 0.05, 1)
            then("verify_by_sensor", 1, 2)
        elif path == "cancelled":
            if self.rng.random() < 0.5:
                then("acknowledge", 0.1, 4)
            then("cancel", 0.5, 30)
        elif path == "recovered":
            if self.rng.random() < 0.3:
                then("acknowledge", 0.1, 2)
            then("close_on_recovery" if standard and standard.on_recovery == "close"
                 else "clear", 0.2, 10)
            if not (standard and standard.on_recovery == "close"):
                fix()
                then("verify_by_sensor", 1, 2)
        elif path == "reopened_after_close":
            then("acknowledge", 0.1, 4)
            fix()
            then("verify", 1, 10, result="pass")
            then("reopen", 2, 48)
            fix()
            then("verify", 1, 10, result="pass")
        elif path == "chattering":
            then("chattering", 0.1, 1)
            then("acknowledge", 0.1, 4)
            fix()
            then("clear", 0.5, 6)
            then("verify_by_sensor", 1, 2)
        elif path == "neglected":
            then("occurrence", 1, 20)
            t = t + self.days(2, 40)
            steps.append(("acknowledge", t, {}))
            then("rectify", 1, 30)
            then("verify", 1, 30, result="pass")
        elif path == "acknowledged_only":
            then("acknowledge", 0.1, 6)
            t = t + self.days(5, 60)
            steps.append(("cancel", t, {}))
        elif path == "rectified_pending":
            then("acknowledge", 0.1, 6)
            fix()
            t = t + self.days(3, 20)
            steps.append(("verify", t, {"result": "pass"}))
        for name, at, kwargs in steps:
            if not self.step(nc, name, at, **kwargs):
                return None
        return nc.row["closed_at"] or nc.history[-1]["at"]

    # --- the whole history ---------------------------------------------------------------

    def pair_ncs(self, asset: Asset, standard: Standard | None,
                 forced: list[datetime]) -> Iterator[Nc]:
        spec = self.spec
        # a few pairs raise most NCs (a Pareto worth drawing), most raise one now and then
        weight = min(self.rng.paretovariate(1.5), 15.0) / 2.7
        gap = spec.days * DAY / max(spec.ncs_per_pair * weight, 0.01) / 2
        t, last_closed = spec.start, None
        names, weights = list(PATHS), list(PATHS.values())
        forced = sorted(forced)
        while True:
            candidate = t + timedelta(seconds=self.rng.expovariate(1 / gap))
            early = [f for f in forced if t < f <= candidate]
            at = early[0] if early else candidate
            if at >= spec.end:
                return
            recurring = last_closed is not None and last_closed >= at - timedelta(days=90)
            nc = self.raise_nc(asset, standard, at, recurring)
            ended = self.follow(nc, self.rng.choices(names, weights)[0], standard)
            yield nc
            if ended is None or nc.state in OPEN_STATES:
                return
            last_closed = nc.row["closed_at"] if nc.state == "closed" else last_closed
            t = ended + timedelta(seconds=1)

    def everything(self) -> Iterator[Nc]:
        spec = self.spec
        all_pairs = pairs(spec)
        forced: dict[int, list[datetime]] = {}
        for _ in range(spec.bursts):
            at = spec.start + timedelta(seconds=self.rng.uniform(0, spec.days * DAY - DAY))
            for index in self.rng.sample(range(len(all_pairs)), min(15, len(all_pairs))):
                forced.setdefault(index, []).append(
                    at + timedelta(seconds=self.rng.uniform(0, 300)))
        for index, (asset, standard) in enumerate(all_pairs):
            yield from self.pair_ncs(asset, standard, forced.get(index, []))
        assets, _ = catalog(spec)
        for asset in assets:
            if self.rng.random() < spec.manual_per_asset:
                yield from self._manual(asset)

    def _manual(self, asset: Asset) -> Iterator[Nc]:
        at = self.spec.start + timedelta(seconds=self.rng.uniform(0, self.spec.days * DAY))
        nc = self.raise_nc(asset, None, at, False)
        self.follow(nc, self.rng.choice(["verified", "cancelled", "neglected"]), None)
        yield nc

    def compliance(self) -> Iterator[dict[str, Any]]:
        spec = self.spec
        for asset, standard in pairs(spec):
            for d in range(spec.days):
                if self.rng.random() < 0.03:
                    continue  # no snapshot that day
                inactive = self.rng.choice((0.0, 0.0, 0.0, 36000.0))
                violating = self.rng.choice((0.0, 0.0, 0.0, self.rng.uniform(0, 7200)))
                no_data = self.rng.choice((0.0, 0.0, self.rng.uniform(0, 3600)))
                ok = DAY - inactive - violating - no_data
                yield {"site_id": asset.site, "asset_id": asset.id,
                       "standard_id": standard.id,
                       "day": (spec.start + timedelta(days=d)).date().isoformat(),
                       "ok": ok, "violating": violating, "no_data": no_data,
                       "inactive": inactive}


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def seed(db: Database, spec: Spec = Spec()) -> dict[str, int]:
    """Write the history of `spec` into an empty store; returns row counts."""
    generator = Generator(spec)
    counts = {"ncs": 0, "history": 0, "compliance_days": 0}
    batch: list[Nc] = []

    def flush(session: Any) -> None:
        if batch:
            session.execute(insert(Nonconformance),
                            [nc.row | derived(nc.row) for nc in batch])
            session.execute(insert(HistoryEntry), [h for nc in batch for h in nc.history])
            counts["ncs"] += len(batch)
            counts["history"] += sum(len(nc.history) for nc in batch)
            batch.clear()

    with db.write() as session:
        for nc in generator.everything():
            batch.append(nc)
            if len(batch) >= 2000:
                flush(session)
        flush(session)
        for chunk in _chunks(generator.compliance(), 5000):  # and their months' roll-up
            add_seconds(session, chunk)
            counts["compliance_days"] += len(chunk)
        for asset, days in ((catalog(spec)[0][0], 3), (catalog(spec)[0][2], 10)):
            starts = spec.end - timedelta(days=days + 5)
            session.add(OutOfService(site_id=asset.site, asset_id=asset.id, starts_at=starts,
                                     ends_at=starts + timedelta(days=days), reason="overhaul",
                                     author="zhang.min"))
        if session.get_bind().dialect.name == "postgresql":
            for table, column in (("nonconformances", "pk"), ("nc_history", "id")):
                session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', "
                                     f"'{column}'), (SELECT max({column}) FROM {table}))"))
        session.commit()
        assert session.scalar(select(func.count()).select_from(Nonconformance)) == \
            counts["ncs"]
    return counts
