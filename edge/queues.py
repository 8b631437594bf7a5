"""Bounded hand-over between threads: a full queue drops its oldest item and counts it."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class DropQueue(Generic[T]):
    """A bounded FIFO. ``put`` never blocks: when full, the oldest item is dropped
    (the consumer wants fresh data) and ``dropped`` / ``dropped_weight`` count it."""

    def __init__(self, maxlen: int, weight: Callable[[T], int] = lambda _: 1) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._weight = weight
        self._cond = threading.Condition()
        self.dropped = 0
        self.dropped_weight = 0  # e.g. samples inside dropped blocks
        self.high_water = 0

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._items) >= self._maxlen:
                old = self._items.popleft()
                self.dropped += 1
                self.dropped_weight += self._weight(old)
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()

    def get(self, timeout_s: float) -> T | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)
            return self._items.popleft() if self._items else None

    def drain(self) -> list[T]:
        with self._cond:
            out = list(self._items)
            self._items.clear()
            return out

    def __len__(self) -> int:
        return len(self._items)
