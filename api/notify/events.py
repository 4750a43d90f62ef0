"""Which NC change raises which notification event (SPEC 7.2), and which timers an NC's
state keeps alive. Pure: a change in, names out."""

from __future__ import annotations

from api.lifecycle import NCChanged

BY_CHANGE: dict[str, tuple[str, ...]] = {
    "raise": ("raised",),
    "occurrence": ("occurrence",),
    "assign": ("assigned",),
    "rectify": ("rectified",),
    "reopen": ("reopened",),
    "reopen_by_sensor": ("reopened",),
    "verify_by_sensor": ("closed",),
    "close_on_recovery": ("closed",),
    "cancel": ("cancelled",),
    "overdue": ("overdue",),
    "escalate": ("escalated",),
}
"""Changes of api.workflow.TRANSITIONS that notify, and their events. acknowledge, start,
clear and external_ref tell nobody anything they need to act on."""


def events_of(change: NCChanged) -> tuple[str, ...]:
    """The events of one NC change in preference order: a route takes the first one it
    accepts (a recurring new NC is `recurring` to a route listing it, else `raised`), so
    a change notifies each route at most once."""
    if change.change == "verify":
        return ("closed",) if change.to_state == "closed" else ("reopened",)
    events = BY_CHANGE.get(change.change, ())
    if not events:
        return ()
    if change.change == "raise" and change.nc.get("recurring"):
        events = ("recurring", *events)
    if _began_chattering(change):
        events = ("chattering", *events)
    return events


def _began_chattering(change: NCChanged) -> bool:
    if change.nc.get("condition") != "chattering":
        return False
    condition = change.changes.get("condition")
    return change.change == "raise" or (isinstance(condition, list)
                                        and condition[:1] != ["chattering"])


ALIVE: dict[str, tuple[str, ...]] = {
    "reminder": ("open",),
    "escalate": ("open",),
    "ack_timeout": ("acknowledged", "rectifying"),
    "due_soon": ("open", "acknowledged", "rectifying"),
}
"""The NC states in which each timer may still fire: a reminder or an escalation only
while nobody acknowledged, an acknowledgement times out until the fix is in, a due date
matters until rectified."""
