"""The agent's exceptions, under one root (the tree is drawn in agent/__init__.py).

Each is also importable where it is raised (`agent.buffer.BufferFull`,
`agent.forward.Rejected`, `agent.runtime.TaskFailed`, `agent.yamldoc.ConfigError`, ...),
which is where callers have always caught them.
"""

from __future__ import annotations


class AgentError(Exception):
    """Anything the agent raises on purpose."""


class BufferFull(AgentError):
    """Nothing could be dropped to make room: the disk itself is full."""


class DeliveryError(AgentError):
    """The API did not take a batch now; the events stay in the outbox for a retry."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClockSkew(DeliveryError):
    """The API refuses events dated ahead of its clock: kept and retried, never dropped."""

    def __init__(self, message: str, event_time: str, server_time: str,
                 offset: float | None) -> None:
        super().__init__(message)
        self.event_time, self.server_time, self.offset = event_time, server_time, offset


class ClockAhead(DeliveryError, RuntimeError):
    """The in-process API refused events dated ahead of its clock: retryable, never a dead
    letter (the events wait in the outbox until the clock, or the reading times, are
    right). Logged by the sink itself, once per spell."""


class Rejected(AgentError):
    """The API refuses these events for good (a 4xx other than auth or rate limits)."""


class TaskFailed(AgentError, RuntimeError):
    """A task ended on its own: a fault every later item would meet too (the buffer's disk
    failing, a bug). Already logged as one line; the process exits 1 for systemd to restart
    it. What one reading, message or event raises never gets here (see agent.pipeline)."""
