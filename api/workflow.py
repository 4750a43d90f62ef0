"""The nonconformance state machine (SPEC section 5): one table, used by the routes, the
automatic verifier and the tests alike.

    open --acknowledge--> acknowledged --start--> rectifying
    open|acknowledged|rectifying --rectify {action, root_cause?}--> pending_verification
    pending_verification --verify {result: pass}--> closed
    pending_verification --verify {result: fail}--> open          (reopen_count += 1)
    any but closed --cancel {reason}--> cancelled
    closed --reopen {reason}--> open                               (reopen_count += 1)
    assign {assignee, department?, due_at?} in any open state
"""

from __future__ import annotations

from dataclasses import dataclass

from common.vocabulary import NC_STATES, OPEN_STATES
from common.vocabulary import UNRECTIFIED as UNRECTIFIED  # callers import it from here

STATES = NC_STATES


@dataclass(frozen=True, slots=True)
class Action:
    """What an action needs (states it applies in, roles, body fields) and where it leads.

    `to` None: the state does not change (assign). verify leads to closed or open by its
    result, which `target` resolves.
    """

    name: str
    sources: tuple[str, ...]
    to: str | None
    roles: tuple[str, ...]
    required: tuple[str, ...] = ()

    def target(self, state: str, result: str | None = None) -> str:
        if self.name == "verify":
            return "closed" if result == "pass" else "open"
        return self.to or state


ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("acknowledge", ("open",), "acknowledged", ("engineer",)),
    Action("start", ("acknowledged",), "rectifying", ("engineer",)),
    Action("rectify", ("open", "acknowledged", "rectifying"), "pending_verification",
           ("engineer",), ("action",)),
    Action("verify", ("pending_verification",), None, ("quality",), ("result",)),
    Action("cancel", OPEN_STATES, "cancelled", ("quality",), ("reason",)),
    Action("reopen", ("closed",), "open", ("quality",), ("reason",)),
    Action("assign", OPEN_STATES, None, ("engineer",), ("assignee",)),
)}


def allowed_actions(state: str) -> list[str]:
    """Actions a person may take on an NC in `state`, in table order."""
    return [name for name, action in ACTIONS.items() if state in action.sources]


class IllegalAction(Exception):
    """The action does not apply in the NC's state (409): names the ones that do."""

    def __init__(self, action: str, state: str) -> None:
        allowed = allowed_actions(state)
        self.allowed = allowed
        super().__init__(f"cannot {action} a nonconformance that is {state}; allowed: "
                         f"{', '.join(allowed) if allowed else 'none'}")


def check(action: str, state: str) -> Action:
    """The action, or IllegalAction when `state` does not allow it."""
    spec = ACTIONS[action]
    if state not in spec.sources:
        raise IllegalAction(action, state)
    return spec
