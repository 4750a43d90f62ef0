"""JSON paths as site.yaml writes them (`$.a.b`, `$.a[0].b`, `$['key with space']`, `$`),
compiled once per subscription: the config checks them with `compile`, the mapper walks
them per message with `get`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collector.errors import PayloadError, SettingError

_NAME = re.compile(r"\.([^.\[\]]+)")
_INDEX = re.compile(r"\[(-?\d+)\]")
_QUOTED = re.compile(r"""\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]""")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A compiled `$.a.b`, `$.a[0].b`, `$['key with space']` or `$`: keys and indices."""

    text: str
    steps: tuple[str | int, ...] = field(default=())
    keys_only: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys_only", all(type(s) is str for s in self.steps))

    @classmethod
    def compile(cls, text: str) -> JsonPath:
        """Parse the path once; SettingError (a ValueError) names what is wrong with it."""
        if not text.startswith("$"):
            raise SettingError(f"path {text!r} must start with $")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            if m := _NAME.match(text, pos):
                steps.append(m.group(1))
            elif m := _INDEX.match(text, pos):
                steps.append(int(m.group(1)))
            elif m := _QUOTED.match(text, pos):
                raw = m.group(1) if m.group(1) is not None else m.group(2)
                steps.append(_ESCAPE.sub(r"\1", raw))
            else:
                raise SettingError(
                    f"path {text!r}: cannot read {text[pos:]!r} "
                    "(use .key, [0] or ['key with space'])"
                )
            pos = m.end()
        return cls(text, tuple(steps))

    def get(self, doc: object) -> object:
        """The value at this path; PayloadError when a step is missing."""
        if self.keys_only:
            # The common case, subscripted straight: JSON keys are strings, so a miss is a
            # KeyError and a step into a list, string or number a TypeError.
            try:
                value = doc
                for key in self.steps:
                    value = value[key]  # type: ignore[index]
                return value
            except (KeyError, TypeError):
                pass  # the checked walk below says what is missing
        value = doc
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(value, list) or not -len(value) <= step < len(value):
                    raise PayloadError(f"{self.text}: no item [{step}]")
                value = value[step]
            else:
                if not isinstance(value, dict) or step not in value:
                    raise PayloadError(f"{self.text}: no key {step!r}")
                value = value[step]
        return value


WHOLE = JsonPath("$")
"""The whole payload: the value of a subscription without `metrics`."""
