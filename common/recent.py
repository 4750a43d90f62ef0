"""A bounded map for per-topic and per-series caches that must not grow with every topic
a broker ever sends."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Keeps the keys used lately: between `size` and 2 x `size` of them.

    Two generations of plain dicts: a hit in the new one costs one lookup, as in a dict; a
    hit in the old one moves the key to the new one; when the new one is full it becomes
    the old one and what was old (not used for a whole generation) is forgotten. So a
    working set of up to `size` keys never misses, and a flood of new keys costs at most
    2 x `size` entries.
    """

    __slots__ = ("_new", "_old", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._new.get(key)
        if value is None and self._old:
            value = self._old.pop(key, None)
            if value is not None:
                self[key] = value
        return value

    def __setitem__(self, key: K, value: V) -> None:
        if len(self._new) >= self.size:
            self._old, self._new = self._new, {}
        self._new[key] = value

    def pop(self, key: K) -> V | None:
        value = self._new.pop(key, None)
        old = self._old.pop(key, None)
        return old if value is None else value

    def clear(self) -> None:
        self._new.clear()
        self._old.clear()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)
