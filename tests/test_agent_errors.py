"""The agent's exceptions share one root, and the tree in agent/__init__.py names them all,
while callers keep catching them where they always did."""

from __future__ import annotations

import agent
import agent.runtime  # imports every module that defines an agent exception
from agent.buffer import BufferFull
from agent.errors import AgentError
from agent.forward import ClockSkew, DeliveryError, Rejected
from agent.runtime import ClockAhead, TaskFailed
from agent.site import ConfigError


def subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *subclasses(sub)}
    return out


def test_every_agent_exception_is_under_one_root() -> None:
    for exc in (BufferFull, ClockSkew, DeliveryError, Rejected, ClockAhead, TaskFailed,
                ConfigError):
        assert issubclass(exc, AgentError), exc
    assert issubclass(TaskFailed, RuntimeError) and issubclass(ClockAhead, RuntimeError)


def test_the_package_docstring_draws_every_one() -> None:
    drawn = agent.__doc__ or ""
    missing = [c.__name__ for c in subclasses(AgentError) if f" {c.__name__} " not in drawn]
    assert missing == []
