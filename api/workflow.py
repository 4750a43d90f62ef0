"""The nonconformance state machine (SPEC section 5) as data: one table of people's
actions and one of the changes the API makes on its own, used by the lifecycle
(api/lifecycle.py, the one function that applies them), the reference docs and the tests.

People's actions (ACTIONS):

    open --acknowledge--> acknowledged --start--> rectifying
    open|acknowledged|rectifying --rectify {action, root_cause?}--> pending_verification
    pending_verification --verify {result: pass}--> closed
    pending_verification --verify {result: fail}--> open          (reopen_count += 1)
    any but closed --cancel {reason}--> cancelled
    closed --reopen {reason}--> open                               (reopen_count += 1)
    assign {assignee, department?, due_at?} in any open state

The API's own (AUTOMATIC), from engine events, compliance snapshots and timers: an NC is
raised, gets occurrences, clears (and closes, with `on_recovery: close`), is verified or
reopened by sensor, becomes overdue; the tracker's ticket id is recorded too. A new kind
(a gateway gone offline, say) is a new row here, and goes through the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.errors import Conflict
from common.vocabulary import ENDED_STATES as ENDED_STATES  # callers import it from here
from common.vocabulary import NC_STATES, OPEN_STATES, FeedType
from common.vocabulary import UNRECTIFIED as UNRECTIFIED  # callers import it from here

STATES = NC_STATES
NEW = None
"""The `from` state of an NC being raised: it has none yet."""


@dataclass(frozen=True, slots=True)
class Action:
    """One change of an NC: the states it applies in, where it leads, who may take it
    and what it is called in the history and the feed.

    `to` None: the state does not change (assign, an occurrence). verify leads to closed
    or open by its result, which `target` resolves. `roles` empty: only the API takes it.
    `feed` None: the change is in the history only.
    """

    name: str
    sources: tuple[str | None, ...]
    to: str | None
    roles: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    feed: FeedType | None = None
    history: str = ""
    """The action as history shows it; empty: `name`."""
    why: str = ""
    """What makes the API take it (AUTOMATIC): the reference docs show it."""

    def target(self, state: str | None, result: str | None = None) -> str:
        if self.name == "verify":
            return "closed" if result == "pass" else "open"
        if self.to is None:
            assert state is not None, f"{self.name} needs an NC that has a state"
            return state
        return self.to

    @property
    def recorded_as(self) -> str:
        return self.history or self.name


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("acknowledge", ("open",), "acknowledged", ("engineer",), feed="acknowledged"),
    Action("start", ("acknowledged",), "rectifying", ("engineer",), feed="started"),
    Action("rectify", ("open", "acknowledged", "rectifying"), "pending_verification",
           ("engineer",), ("action",), feed="rectified"),
    Action("verify", ("pending_verification",), None, ("quality",), ("result",),
           feed="verified"),
    Action("cancel", OPEN_STATES, "cancelled", ("quality",), ("reason",), feed="cancelled"),
    Action("reopen", ("closed",), "open", ("quality",), ("reason",), feed="reopened"),
    Action("assign", OPEN_STATES, None, ("engineer",), ("assignee",), feed="assigned"),
)}
"""What people do (POST /nonconformances/{id}/{action}), in the order the docs list them."""

AUTOMATIC: dict[str, Action] = {a.name: a for a in (
    Action("raise", (NEW,), "open", feed="raised", history="raised",
           why="violation (engine event), manual finding, or a failure in an inspection"),
    Action("occurrence", OPEN_STATES, None, feed="occurrence",
           why="a new episode, or a failure in an inspection, while the NC is open"),
    Action("clear", OPEN_STATES, None, feed="cleared", history="cleared",
           why="the condition recovered"),
    Action("close_on_recovery", UNRECTIFIED, "closed", feed="closed", history="cleared",
           why="recovery, on_recovery close (sensor)"),
    Action("reopen_by_sensor", ("pending_verification",), "open", feed="reopened",
           history="reopened", why="violation during verify_for (sensor)"),
    Action("verify_by_sensor", ("pending_verification",), "closed", feed="closed",
           history="verified", why="compliant for verify_for (sensor)"),
    Action("overdue", UNRECTIFIED, None, feed="overdue", why="the due date passed"),
    Action("escalate", ("open",), None, history="escalated",
           why="not acknowledged within a notification route's escalate_after"),
    Action("external_ref", STATES, None, ("tracker",),
           why="the tracker's ticket id; not in the feed: a tracker is not woken by its "
               "own write"),
)}
"""What the API does on its own (and the tracker's reference): never refused to a person,
since no person asks for it; applying one in another state is a bug (IllegalAction)."""

TRANSITIONS: dict[str, Action] = {**ACTIONS, **AUTOMATIC}
"""Every change the lifecycle applies, by name."""


def allowed_actions(state: str) -> list[str]:
    """Actions a person may take on an NC in `state`, in table order."""
    return [name for name, action in ACTIONS.items() if state in action.sources]


class IllegalAction(Conflict):
    """The action does not apply in the NC's state: names the ones that do."""

    def __init__(self, action: str, state: str | None) -> None:
        allowed = allowed_actions(state) if state is not None else []
        self.allowed = allowed
        super().__init__(f"cannot {action} a nonconformance that is {state}; allowed: "
                         f"{', '.join(allowed) if allowed else 'none'}")


def check(action: str, state: str | None) -> Action:
    """The change, or IllegalAction when `state` does not allow it."""
    spec = TRANSITIONS[action]
    if state not in spec.sources:
        raise IllegalAction(action, state)
    return spec
