"""A least-recently-used cache bounded by bytes, not by count.

A count bound says nothing about memory: one Gram target of the classic five style layers is
2.4 MB, one of every VGG-19 layer 22 MB, and a decoded 8192-px image 800 MB. `ByteLRU` sums
each item's size (tensors: `element_size() * nelement()`, arrays: `nbytes`, bytes: `len`, and
dicts/lists/tuples of those) and evicts the least recently used items until the total fits.
Torch-free and thread-safe (one lock), so the engine's Gram cache and the runner's decode cache
share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["ByteLRU", "nbytes_of"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def nbytes_of(value: Any) -> int:
    """Bytes held by `value`: a torch tensor (`element_size() * nelement()`), anything with
    `nbytes` (numpy arrays), bytes-like objects, or a dict/list/tuple of those (summed).
    Raises TypeError for anything else: give `ByteLRU` a `size_fn` then."""
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size()) * int(value.nelement())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if hasattr(value, "nbytes"):  # numpy arrays, memoryview
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes_of(v) for v in value)
    raise TypeError(f"cannot size a {type(value).__name__}; pass size_fn= to ByteLRU")


class ByteLRU(Generic[K, V]):
    """LRU cache holding at most `max_bytes` (sizes from `size_fn`, default `nbytes_of`).

    `get` marks an item as recently used; `put` inserts or replaces it and evicts the least
    recently used items until the total fits. An item larger than `max_bytes` on its own is not
    stored (`put` returns False) and evicts nothing. `max_bytes=0` disables the cache."""

    def __init__(self, max_bytes: int, size_fn: Callable[[V], int] | None = None):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._size_fn = size_fn or nbytes_of
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        """The cached value (now the most recently used), or `default`."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return default
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V) -> bool:
        """Store `value` under `key`, evicting least recently used items to fit. Returns False
        (and stores nothing) when the item alone exceeds `max_bytes`; a previous value under
        `key` is dropped either way."""
        size = int(self._size_fn(value))
        if size < 0:
            raise ValueError(f"size_fn returned {size} for {key!r}")
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if size > self.max_bytes:
                return False
            while self._items and self._nbytes + size > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self._nbytes -= freed
                self.evictions += 1
            self._items[key] = (value, size)
            self._nbytes += size
            return True

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove and return the value under `key`, or `default`."""
        with self._lock:
            hit = self._items.pop(key, None)
            if hit is None:
                return default
            self._nbytes -= hit[1]
            return hit[0]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Total bytes of the cached items."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Membership without touching the recency order."""
        return key in self._items

    def keys(self) -> Iterator[K]:
        """Keys, least recently used first (a snapshot)."""
        with self._lock:
            return iter(list(self._items))

    def __repr__(self) -> str:
        return f"ByteLRU({len(self)} items, {self._nbytes:,} of {self.max_bytes:,} bytes)"
