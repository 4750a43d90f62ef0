"""What the reports need to know of an NC's past, kept on the NC as each change is
recorded, so that a year's report reads NC rows and not their hundreds of thousands of
history rows.

`kept_facts` is called by `api.lifecycle` for every history entry it writes (and by the
reports' seed, so both keep them alike). Each fact is defined by the history, and
migration 0012 filled it from the history for NCs recorded before it:

- `acknowledged_at`: the first acknowledge or rectify (rectify may skip acknowledge);
- `first_verification`: "pass" or "fail", the result of the first verification, by a
  person (verify) or by sensor (verified, reopened);
- `closed_by_sensor`: the latest change into closed was by the API (verified by sensor) or by the
  agent's event (closed on recovery), not by a person;
- `chattered`: the NC's condition was chattering at some change.

`rectified_at` (the latest rectify), `closed_at`, `reopen_count` and `state` are kept by
the lifecycle already. These are the facts as they stand now; a report of a period that
ended before an NC's latest change reads that NC's history instead (api.reports.figures).

`fact_flags` packs them, with the state, into the one integer a report reads of each NC
(its `facts` column, kept by api.store on every write and filled by migration 0020):
evaluating the same dozen comparisons for each NC of a year was a third of its read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from common.vocabulary import NC_STATES, SYSTEM_ROLE

ACKNOWLEDGING = ("acknowledge", "rectify")
"""History actions that show a person took the NC up (rectify may skip acknowledge)."""
VERIFYING = ("verify", "verified", "reopened")
"""A person's verify (to closed or open), the sensor's pass and the sensor's reopening:
every verification result the history holds."""
SENSOR_ROLES = (SYSTEM_ROLE, "agent")
"""Who closes an NC without a person: the API (verified by sensor) and the agent whose
event closed it on recovery."""
COLUMNS = ("acknowledged_at", "first_verification", "closed_by_sensor", "chattered")

STATE_CODE = {state: code for code, state in enumerate(NC_STATES)}
"""States as small integers (7: none of them): the low three bits of an NC's flags."""
FLAG = {"closed_by_sensor": 8, "passed_first": 16, "failed_first": 32, "chattered": 64,
        "recurring": 128, "ever_closed": 256, "reopened": 512, "on_time": 1024,
        "rectified_due": 2048, "rectified": 4096, "acknowledged": 8192}
"""The bits of an NC's flags above its state's code (docs/reports.md names each fact)."""


def kept_facts(nc: Mapping[str, Any], *, action: str, from_state: str | None,
               to_state: str | None, role: str, at: datetime) -> dict[str, Any]:
    """The fact columns that change when a history entry (`action`, from `from_state` to
    `to_state`, by `role`, `at`) is recorded for an NC whose columns are `nc` (its
    condition already the new one)."""
    changed: dict[str, Any] = {}
    if action in ACKNOWLEDGING and nc["acknowledged_at"] is None:
        changed["acknowledged_at"] = at
    if action in VERIFYING and nc["first_verification"] is None:
        changed["first_verification"] = "pass" if to_state == "closed" else "fail"
    if to_state == "closed" and from_state != "closed":
        changed["closed_by_sensor"] = role in SENSOR_ROLES
    if nc["condition"] == "chattering" and not nc["chattered"]:
        changed["chattered"] = True
    return changed


def fact_flags(nc: Mapping[str, Any]) -> int:
    """An NC's state and facts as they stand now as flags (FLAG and STATE_CODE), from its
    columns `nc` (those with a default may be absent): what api.reports.figures computes
    in SQL for an NC whose `facts` column is NULL, bit for bit."""
    rectified, due = nc.get("rectified_at"), nc.get("due_at")
    bits = {"closed_by_sensor": bool(nc.get("closed_by_sensor")),
            "passed_first": nc.get("first_verification") == "pass",
            "failed_first": nc.get("first_verification") == "fail",
            "chattered": bool(nc.get("chattered")) or nc.get("condition") == "chattering",
            "recurring": bool(nc.get("recurring")),
            "ever_closed": nc.get("closed_at") is not None,
            "reopened": (nc.get("reopen_count") or 0) > 0,
            "on_time": rectified is not None and due is not None and rectified <= due,
            "rectified_due": rectified is not None and due is not None,
            "rectified": rectified is not None,
            "acknowledged": nc.get("acknowledged_at") is not None}
    return STATE_CODE.get(nc.get("state"), 7) + sum(FLAG[name] for name, on in bits.items()
                                                      if on)
