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
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from common.vocabulary import SYSTEM_ROLE

ACKNOWLEDGING = ("acknowledge", "rectify")
"""History actions that show a person took the NC up (rectify may skip acknowledge)."""
VERIFYING = ("verify", "verified", "reopened")
"""A person's verify (to closed or open), the sensor's pass and the sensor's reopening:
every verification result the history holds."""
SENSOR_ROLES = (SYSTEM_ROLE, "agent")
"""Who closes an NC without a person: the API (verified by sensor) and the agent whose
event closed it on recovery."""
COLUMNS = ("acknowledged_at", "first_verification", "closed_by_sensor", "chattered")


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
