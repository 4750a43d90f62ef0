"""The event contract: what the rules engine tells the rest of Patrol, written once for
the producer (the engine and the agent's outbox) and the consumer (the API) alike.

    producer: Event, Snapshot (engine dataclasses), SiteCatalog (the agent's assets and
              standards) --to_dict()--> the wire form
    consumer: the wire form --EventsIn / AnyEvent--> EventIn, SnapshotIn, SiteCatalogIn
              (+ StandardInfo, ComplianceItem, CatalogAsset, CatalogStandard), what api/
              applies

Compatibility (a fleet runs mixed versions): the wire form only grows. Each message
says its `schema_version` (CONTRACT_VERSION); one without it comes from an agent older
than the field and is version 1. A field the consumer does not know, sent by a newer
agent, is accepted, counted and logged once per name (`UNKNOWN_FIELDS`), never refused
and never dropped without a trace. Names are SPEC's (section 6): extend, never rename.

An event's id is derived from what it is (site, asset, standard, episode start, type), so
replaying the same readings after a crash yields the same ids and the API can ignore the
ones it has already applied. A site catalog's id is derived from its content and time, so
the same catalog sent twice is applied once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from common.logonce import WarnOnce
from common.vocabulary import ComplianceState, OnRecovery, Severity
from common.wire_types import MAX_INT, MAX_SECONDS, JsonObject, Moment, Text

CONTRACT_VERSION = 3
"""The version of the wire form this code writes and fully reads. Bump it when a field is
added; never remove or rename one. 2: `standard.kind`. 3: the `site_catalog` message and
snapshot items' `last_value` and `last_at`."""

EventType = Literal["violation_started", "violation_cleared", "chattering"]
SnapshotType = Literal["compliance_snapshot"]
CatalogType = Literal["site_catalog"]

log = logging.getLogger("patrol.contract")


def event_id(site_id: str, asset_id: str, standard_id: str, episode_start: float,
             kind: str) -> str:
    """Stable id of one event of one violation episode (millisecond resolution)."""
    key = f"{site_id}|{asset_id}|{standard_id}|{round(episode_start * 1000)}|{kind}"
    return "ev_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def iso(ts: float) -> str:
    """Epoch seconds -> `2026-11-25T08:00:00Z` (milliseconds kept when present)."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


# --- the producer: what the engine emits ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one (asset, standard): a violation began or ended."""

    type: EventType
    site_id: str
    asset_id: str
    standard_id: str
    standard_version: int
    metric: str
    episode_start: float
    at: float
    value: float | None = None
    limit: dict[str, Any] = field(default_factory=dict)
    readings: tuple[tuple[float, float], ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    standard: dict[str, Any] = field(default_factory=dict)
    """`rules.standard.Standard.summary()`: the fields of StandardInfo."""
    asset: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return event_id(self.site_id, self.asset_id, self.standard_id, self.episode_start,
                        self.type)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (POST /api/v1/events and the agent's outbox): EventIn's fields."""
        evidence = {"value": _json_number(self.value), "limit": self.limit,
                    "readings": [[iso(ts), value] for ts, value in self.readings]}
        if self.stats:
            evidence["stats"] = {k: _json_number(v) for k, v in self.stats.items()}
        return {
            "id": self.id, "type": self.type, "schema_version": CONTRACT_VERSION,
            "site_id": self.site_id, "asset_id": self.asset_id,
            "standard_id": self.standard_id, "standard_version": self.standard_version,
            "metric": self.metric, "episode_start": iso(self.episode_start),
            "at": iso(self.at), "evidence": evidence, "standard": self.standard,
            "asset": self.asset,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Compliance of every (asset, standard) of a site, and time in each state since
    `since`: what compliance rates are computed from. `items` hold ComplianceItem's
    fields."""

    site_id: str
    since: float
    at: float
    items: list[dict[str, Any]]
    type: SnapshotType = "compliance_snapshot"

    @property
    def id(self) -> str:
        return event_id(self.site_id, "*", "*", self.at, self.type)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: SnapshotIn's fields."""
        return {"id": self.id, "type": self.type, "schema_version": CONTRACT_VERSION,
                "site_id": self.site_id, "since": iso(self.since), "at": iso(self.at),
                "items": self.items}


@dataclass(frozen=True, slots=True)
class SiteCatalog:
    """A site's assets and standards as the agent loaded them (at start and after each
    reload), so an API without the site's files can list them and every standard version
    it has seen. `assets` hold CatalogAsset's fields, `standards` CatalogStandard's."""

    site_id: str
    at: float
    assets: list[dict[str, Any]]
    standards: list[dict[str, Any]]
    type: CatalogType = "site_catalog"

    @property
    def id(self) -> str:
        """From the content and the time: a resend is one catalog, a later one (even with
        the same content, after a change back) is another."""
        content = json.dumps([self.assets, self.standards], sort_keys=True,
                             separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"{self.site_id}|{round(self.at * 1000)}|{self.type}|{digest}"
        return "sc_" + hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """The wire form: SiteCatalogIn's fields."""
        return {"id": self.id, "type": self.type, "schema_version": CONTRACT_VERSION,
                "site_id": self.site_id, "at": iso(self.at), "assets": self.assets,
                "standards": self.standards}


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON: they travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- fields a newer producer sends ---------------------------------------------------


class UnknownFields:
    """Fields of the wire form this side does not know, by dotted name (`event.x`,
    `event.standard.x`, `snapshot.items.x`, `catalog.standards.x`, `batch.x`): each name
    logged once at WARNING (repeats at DEBUG), and counted once per message that carries
    it."""

    MAX_NAMES = 256
    """Distinct names kept; past it they count as OTHER (names come from the network)."""
    OTHER = "(other)"

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._warnings: dict[str, WarnOnce] = {}
        self._versions: set[int] = set()

    def note(self, names: Iterable[str], version: int = CONTRACT_VERSION
             ) -> tuple[str, ...]:
        """Count and log one message's unknown field names; returns them."""
        found = tuple(dict.fromkeys(names))
        if version <= CONTRACT_VERSION and not found:
            return found
        with self._lock:
            if version > CONTRACT_VERSION and version not in self._versions:
                if len(self._versions) < self.MAX_NAMES:
                    self._versions.add(version)
                self._log.warning("events of contract version %d arrive (this side knows "
                                  "up to %d): fields it does not know are counted and "
                                  "ignored", version, CONTRACT_VERSION)
            for name in found:
                key = name if name in self._counts or len(self._counts) < self.MAX_NAMES \
                    else self.OTHER
                self._counts[key] += 1
                warn = self._warnings.setdefault(key, WarnOnce(self._log))
                warn.trouble("a sender's events carry the field %s, which this side does "
                             "not know (a newer agent?): accepted and ignored", key)
        return found

    def counts(self) -> dict[str, int]:
        """Messages that carried each unknown field since this process started."""
        with self._lock:
            return dict(self._counts)


UNKNOWN_FIELDS = UnknownFields(log)


def _printable(name: str) -> str:
    return name if len(name) <= 64 and name.isprintable() else repr(name[:64])


# --- the consumer: the wire form, validated ----------------------------------------------


class _Wire(BaseModel):
    """A part of the wire form: fields it does not declare are taken aside, not refused."""

    model_config = ConfigDict(extra="allow")

    def _take_unknown(self, prefix: str) -> list[str]:
        """The names of undeclared fields (with `prefix`), removed from this model so
        nothing unchecked is stored or answered."""
        extra = self.__pydantic_extra__
        if not extra:
            return []
        names = [prefix + _printable(name) for name in extra]
        self.__pydantic_fields_set__.difference_update(extra)
        extra.clear()
        return names


class _Message(_Wire):
    """A whole message (an event, a snapshot, a batch): knows its unknown fields."""

    _unknown: tuple[str, ...] = PrivateAttr(default=())

    @property
    def unknown_fields(self) -> tuple[str, ...]:
        """Names of the fields this side did not know, as UNKNOWN_FIELDS counted them."""
        return self._unknown


SchemaVersion = Annotated[int, Field(ge=1, le=MAX_INT, description=(
    "the sender's contract version; absent: 1 (an agent from before the field)"))]


class StandardInfo(_Wire):
    """The standard as the agent judged it; lets the API open an NC without its files."""

    title: Text
    clause: Text = ""
    category: Text | None = None
    severity: Severity = "major"
    department: Text | None = None
    rectify_within: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")
    verify_for: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")
    on_recovery: OnRecovery = "keep_open"
    no_data_after: float | None = Field(None, gt=0, le=MAX_SECONDS, description="seconds")
    kind: Text | None = Field(None, max_length=32, description="the check's kind (range, "
                              "stale...): what notification routes and inhibition match")


class EventIn(_Message):
    """A rules-engine event (Event.to_dict)."""

    id: Text = Field(min_length=1, max_length=64)
    type: EventType
    schema_version: SchemaVersion = 1
    site_id: Text = Field(min_length=1, max_length=64)
    asset_id: Text = Field(min_length=1, max_length=128)
    standard_id: Text = Field(min_length=1, max_length=128)
    standard_version: int = Field(1, ge=1, le=MAX_INT)
    metric: Text | None = Field(None, max_length=128)
    episode_start: Moment
    at: Moment
    evidence: JsonObject = Field(default_factory=dict)
    standard: StandardInfo
    asset: JsonObject = Field(default_factory=dict)

    @model_validator(mode="after")
    def _note_unknown(self) -> Self:
        self._unknown = UNKNOWN_FIELDS.note(
            [*self._take_unknown("event."), *self.standard._take_unknown("event.standard.")],
            self.schema_version)
        return self


class ComplianceItem(_Wire):
    asset_id: Text = Field(min_length=1, max_length=128)
    standard_id: Text = Field(min_length=1, max_length=128)
    standard_version: int = Field(1, ge=1, le=MAX_INT)
    state: ComplianceState
    seconds: dict[ComplianceState, Annotated[float, Field(ge=0, le=MAX_SECONDS,
                                                          allow_inf_nan=False)]] = Field(
        default_factory=dict)
    readings: int = Field(0, ge=0, le=MAX_INT,
                          description="good readings judged since the last snapshot")
    last_value: float | None = Field(None, allow_inf_nan=False, description=(
        "the pair's last judged value (absent: an agent from before the field)"))
    last_at: Moment | None = Field(None, description="when that value was read")


class SnapshotIn(_Message):
    """Compliance of every (asset, standard) of a site (Snapshot.to_dict)."""

    id: Text = Field(min_length=1, max_length=64)
    type: SnapshotType
    schema_version: SchemaVersion = 1
    site_id: Text = Field(min_length=1, max_length=64)
    since: Moment
    at: Moment
    items: list[ComplianceItem] = Field(max_length=200_000)

    @model_validator(mode="after")
    def _note_unknown(self) -> Self:
        names = self._take_unknown("snapshot.")
        for item in self.items:  # 200,000 items: one attribute read each when none
            if item.__pydantic_extra__:
                names += item._take_unknown("snapshot.items.")
        self._unknown = UNKNOWN_FIELDS.note(names, self.schema_version)
        return self


class CatalogAsset(_Wire):
    """An asset as site.yaml declares it."""

    id: Text = Field(min_length=1, max_length=128)
    type: Text = Field("", max_length=64)
    name: Text = Field("", max_length=1000)
    location: Text = Field("", max_length=1000)
    department: Text = Field("", max_length=128)
    tags: dict[Annotated[Text, Field(max_length=1000)],
               Annotated[Text, Field(max_length=1000)]] = Field(default_factory=dict,
                                                                max_length=1000)


class CatalogStandard(_Wire):
    """One standard of the site's files, at the version the agent loaded."""

    id: Text = Field(min_length=1, max_length=128)
    version: int = Field(1, ge=1, le=MAX_INT)
    title: Text
    clause: Text = ""
    category: Text | None = Field(None, max_length=32)
    severity: Severity = "major"
    department: Text | None = Field(None, max_length=128)
    kind: Text | None = Field(None, max_length=32)
    metric: Text | None = Field(None, max_length=128)
    expr: Text | None = None
    definition: JsonObject = Field(default_factory=dict, description=(
        "the standard as parsed from its file, defaults filled in"))
    text: Text = Field("", description="its YAML as written in its file (comments kept); "
                       "a YAML dump of `definition` when the file's text cannot be cut out")
    file: Text | None = Field(None, max_length=1024,
                              description="its file, relative to site.yaml's folder")


class SiteCatalogIn(_Message):
    """A site's assets and standards (SiteCatalog.to_dict): what GET /assets and GET
    /standards list, with every standard version seen."""

    id: Text = Field(min_length=1, max_length=64)
    type: CatalogType
    schema_version: SchemaVersion = 1
    site_id: Text = Field(min_length=1, max_length=64)
    at: Moment
    assets: list[CatalogAsset] = Field(max_length=100_000)
    standards: list[CatalogStandard] = Field(max_length=20_000)

    @model_validator(mode="after")
    def _one_of_each(self) -> Self:
        """An id twice would make the catalog say two things at once."""
        for name, items in (("asset", self.assets), ("standard", self.standards)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"{name} {item.id!r} is listed twice")
                seen.add(item.id)
        names = self._take_unknown("catalog.")
        for asset in self.assets:
            if asset.__pydantic_extra__:
                names += asset._take_unknown("catalog.assets.")
        for standard in self.standards:
            if standard.__pydantic_extra__:
                names += standard._take_unknown("catalog.standards.")
        self._unknown = UNKNOWN_FIELDS.note(names, self.schema_version)
        return self


AnyEvent = Annotated[EventIn | SnapshotIn | SiteCatalogIn, Field(discriminator="type")]


class EventsIn(_Message):
    """A batch of events (POST /api/v1/events). `unknown_fields` lists each unknown name
    once per message of the batch that carried it."""

    events: list[AnyEvent] = Field(max_length=1000)

    @model_validator(mode="after")
    def _note_unknown(self) -> Self:
        own = UNKNOWN_FIELDS.note(self._take_unknown("batch."))
        self._unknown = (*own, *(name for event in self.events
                                 for name in event.unknown_fields))
        return self
