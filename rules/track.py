"""What the engine holds per (asset, standard) pair and per (asset, metric) stream."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.vocabulary import COMPLIANCE_STATES
from rules.checks import Checker
from rules.expr import Expr
from rules.schedule import Schedule
from rules.standard import Asset, Standard

OK, PENDING, VIOLATING, RECOVERING = "ok", "pending", "violating", "recovering"
"""Where a pair stands: the timing state machine of rules.episodes."""
INF = math.inf


def no_seconds() -> dict[str, float]:
    """Seconds in each compliance state: none yet."""
    return dict.fromkeys(COMPLIANCE_STATES, 0.0)


@dataclass(slots=True, eq=False)
class Track:
    """One (asset, standard) pair and where it stands.

    The pair's judged readings (evidence) sit in the engine's ring buffer of floats
    (rules.evidence), slots `index * RING` on, rather than in a deque of tuples: a million
    tuples held for evidence made every full garbage collection walk them (over 100 ms a
    pass at 20,000 pairs), and a buffer of floats holds no objects.
    """

    asset: Asset
    standard: Standard
    checker: Checker
    expr: Expr | None
    schedule: Schedule | None
    index: int  # in the engine's list of pairs (heap entries name the pair by it)
    status: str = OK
    since: float = 0.0  # episode start: first violating judgement
    recover_since: float = 0.0
    reported: bool = False  # the last event sent said "violating"
    chattering: bool = False
    flips: list[float] | tuple[()] = ()  # raised episodes within chattering.per (a list
    # once there is one: most pairs never raise, and an empty list is one more object)
    evidence_at: int = 0  # the engine's evidence slot the next judged reading goes to
    evidence_full: bool = False  # the ring has wrapped: every slot holds a reading
    due: float = INF  # earliest heap entry for this pair (-inf: ticked every time)
    last_good: float | None = None
    readings: int = 0  # good readings judged since the last snapshot
    compliance: str = "no_data"
    compliance_since: float = 0.0
    active_since: float = 0.0  # the schedule's active stretch seen last (tick or reading)
    active_until: float = 0.0
    seconds: dict[str, float] = field(default_factory=no_seconds)

    @property
    def key(self) -> str:
        return f"{self.asset.id}|{self.standard.id}|{self.standard.version}"

    @property
    def metric(self) -> str:
        return self.standard.metric or (self.expr.text if self.expr else "")


@dataclass(slots=True, eq=False)
class Series:
    """One (asset, metric) stream: the pairs that read it and its newest good timestamp
    (-inf: none yet), found with one dict lookup per reading."""

    tracks: tuple[Track, ...]
    last_ts: float = -INF
    expr: bool = False  # an expr reads this metric: the asset's latest values are kept


class Alarm:
    """A checker's `alarm` (see Checker.due): notes (due, pair index) for the engine's next
    tick. It holds no reference to the engine or the pair, so an engine left behind by a
    reload is freed at once, not by the cyclic garbage collector."""

    __slots__ = ("index", "noted")

    def __init__(self, index: int, noted: list[tuple[float, int]]) -> None:
        self.index, self.noted = index, noted

    def __call__(self, due: float) -> None:
        self.noted.append((due, self.index))
