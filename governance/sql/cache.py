"""A small bounded cache for what never changes once a release is published.

A published release is immutable, so the answer to a question about it alone (its column
catalogue, the checked parse of a query against a project's grants) can be kept for as
long as the process reads that release. Every key names the release (the engine holding
the cache is one release file) and, where the answer depends on them, the grants; a new
release gets a new engine and so an empty cache, and a grant change gives a new key.
The cache holds at most ``maxsize`` entries, dropping the least recently used.

>>> cache: Bounded[str, int] = Bounded(2)
>>> cache.get_or_make("a", lambda: 1), cache.get_or_make("b", lambda: 2)
(1, 2)
>>> cache.get_or_make("a", lambda: 99)  # kept
1
>>> cache.get_or_make("c", lambda: 3)  # "b" is dropped: the least recently used
3
>>> sorted(cache.keys())
['a', 'c']
>>> sized: Bounded[str, str] = Bounded(10, weigh=len, max_weight=5)
>>> sized.get_or_make("x", lambda: "abc"), sized.get_or_make("y", lambda: "de")
('abc', 'de')
>>> sized.get_or_make("z", lambda: "fg"), sorted(sized.keys())  # "x" dropped: 7 > 5
('fg', ['y', 'z'])
>>> sized.get_or_make("big", lambda: "too heavy"), "big" in sized  # returned, not kept
('too heavy', False)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A thread-safe least-recently-used map of at most ``maxsize`` entries."""

    def __init__(
        self,
        maxsize: int,
        *,
        weigh: Callable[[V], int] | None = None,
        max_weight: int | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # optionally bounded by weight too (roughly bytes): a value heavier than
        # ``max_weight`` is returned but not kept
        self._weigh = weigh
        self.max_weight = max_weight
        self._weights: dict[K, int] = {}
        self.weight = 0

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The cached value of ``key``, or ``make()`` stored under it (an exception raised
        by ``make`` is not cached: a refusal is checked again next time)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        value = make()  # outside the lock: two threads may both make it, both the same
        weight = self._weigh(value) if self._weigh is not None else 0
        if self.max_weight is not None and weight > self.max_weight:
            return value
        with self._lock:
            self.weight += weight - self._weights.get(key, 0)
            self._items[key] = value
            self._weights[key] = weight
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize or (
                self.max_weight is not None and self.weight > self.max_weight
            ):
                dropped, _ = self._items.popitem(last=False)
                self.weight -= self._weights.pop(dropped)
        return value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept (a hit: it becomes the most recently used)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)  # type: ignore[arg-type]
                self.hits += 1
                return True
            return False

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weights.clear()
            self.weight = 0
