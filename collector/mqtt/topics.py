"""Topic patterns: literal levels, `+`, `#`, and `{asset}`/`{metric}` placeholders."""

from __future__ import annotations


class TopicMatcher:
    """A topic pattern: literal levels, `+`, `#`, and `{asset}`/`{metric}` (one level each)."""

    __slots__ = ("_asset_at", "_levels", "_metric_at", "_multi", "pattern", "subscribe_topic")

    def __init__(self, pattern: str) -> None:
        levels = pattern.split("/")
        self.pattern = pattern
        self._multi = levels[-1] == "#"
        if self._multi:
            levels = levels[:-1]
        self._asset_at = levels.index("{asset}") if "{asset}" in levels else None
        self._metric_at = levels.index("{metric}") if "{metric}" in levels else None
        # None matches any one level; a string must be equal.
        self._levels: tuple[str | None, ...] = tuple(
            None if level in ("+", "{asset}", "{metric}") else level for level in levels
        )
        self.subscribe_topic = "/".join(
            "+" if level in ("{asset}", "{metric}") else level for level in pattern.split("/")
        )

    def match(self, topic: str) -> tuple[str | None, str | None] | None:
        """(asset, metric) taken from the topic (None where the pattern has no placeholder)."""
        parts = topic.split("/")
        n = len(self._levels)
        if self._multi:
            # `a/#` also matches `a` itself (MQTT 3.1.1, 4.7.1.2).
            if len(parts) < n:
                return None
        elif len(parts) != n:
            return None
        # Wildcards at the first level never match `$SYS/...` and other `$` topics (4.7.2).
        if topic.startswith("$") and (n == 0 or self._levels[0] is None):
            return None
        for want, got in zip(self._levels, parts, strict=False):
            if want is not None and want != got:
                return None
        asset = parts[self._asset_at] if self._asset_at is not None else None
        metric = parts[self._metric_at] if self._metric_at is not None else None
        return asset, metric
