"""What every channel shares: the render function it is given and the sender it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from api.notify.message import Notice, Outcome, Rendered

Render = Callable[[Notice, str, int], Rendered]
"""`api.notify.render.render(notice, style, limit)`: the notice in a style ("dingtalk",
"wecom_markdown", "wecom_text", "feishu", "slack", "text", "html", "generic") within
`limit` bytes of UTF-8 body (bind `templates` with functools.partial). Passed in, so a
channel can be tested with any renderer and the renderer without any channel."""


class Sender(Protocol):
    """Delivers notices to one channel; `close` when the channel is no longer used."""

    async def send(self, notice: Notice) -> Outcome: ...

    async def close(self) -> None: ...


def fit(render: Render, notice: Notice, style: str, limit: int,
        size: Callable[[Rendered], int], budget: int | None = None) -> Rendered:
    """`notice` rendered so that `size` of it (what the tool counts: a JSON body with its
    escapes, a text with its @mentions, characters) stays within `limit`. The renderer
    gets `budget` bytes (default `limit`), then, while too big, the body it gave less the
    overflow, or less in proportion if that is less (characters against bytes); a few
    times at most (then the tool may refuse it)."""
    rendered = render(notice, style, budget or limit)
    for _ in range(6):
        measured = size(rendered)
        if measured <= limit:
            break
        used = len(rendered.body.encode())
        budget = min(used - (measured - limit), used * limit // measured)
        if budget <= 0:
            break
        rendered = render(notice, style, budget)
    return rendered
