"""What travels between the dispatcher, the renderer and the channels: the notice a message
stands for, the text rendered for one tool, and the outcome of one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from api.notify.config import Locale

NoticeKind = Literal["group", "digest", "test", "report"]
"""`report`: an inspection report or a summary a schedule sends (api.inspections), which
its sender renders with the report's own function; its `entries` are empty."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One NC in a message, and why it is there."""

    event: str
    """A NotifyEvent (`raised`, `overdue`...) or a TimerKind (`reminder`, `ack_timeout`)."""
    nc: dict[str, Any]
    """The NC's public JSON form (SPEC section 5) as the change left it."""
    nc_url: str | None = None
    """The NC in the console (`server.public_url`), None without one."""
    ack_url: str | None = None
    """A signed, expiring link that acknowledges the NC; None when it is not open."""


@dataclass(frozen=True, slots=True)
class Notice:
    """What one message says: a group's entries (most severe first), a digest of what a
    channel's limit held back, or a test."""

    channel: str
    kind: NoticeKind
    entries: tuple[Entry, ...]
    total: int
    """NCs the message stands for; more than `entries` in a digest ("37 more...")."""
    locale: Locale = "en"
    timezone: str = "UTC"
    """Times are shown in it (the site's)."""
    site_name: str = ""
    list_url: str | None = None
    """The console's NC list, for what a message had to leave out."""
    window: float = 600.0
    """A digest: the seconds it covers."""
    counts: tuple[tuple[str, int], ...] = ()
    """A digest: NCs per event, most first."""

    @property
    def severity(self) -> str:
        """The most severe entry's (what a subject or a colour shows)."""
        order = {"critical": 0, "major": 1, "minor": 2}
        return min((e.nc.get("severity", "minor") for e in self.entries),
                   key=lambda s: order.get(s, 3), default="minor")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notice as text for one tool: `body` within the tool's size, saying how many NCs
    it had to leave out and linking to the rest."""

    title: str
    body: str
    shown: int
    """Entries the body holds; the others are counted in it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt to send a message."""

    ok: bool
    error: str | None = None
    retry_after: float | None = None
    """The tool said when to try again (HTTP Retry-After, a rate-limit error code)."""
    permanent: bool = False
    """Retrying cannot help (a bad signature secret, a robot deleted): failed at once."""
