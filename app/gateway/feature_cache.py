"""Spec 4.2 feature cache: raw OHLCV window -> engineered features.

The key is the exact bytes of the window (timestamps and all five columns) after the
feature spec version, so a changed bar, a shifted window or a new feature definition can
never be answered from the cache; TTL and size bound it (~3 KB of key per entry).
"""

from __future__ import annotations

import numpy as np
from cachetools import TTLCache

from app.gateway.windows import Window
from model.common.features import FEATURE_SPEC_VERSION

_VERSION = FEATURE_SPEC_VERSION.encode()


class FeatureCache:
    def __init__(self, *, ttl_seconds: float, max_entries: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cache: TTLCache[bytes, np.ndarray] = TTLCache(maxsize=max_entries, ttl=ttl_seconds)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(window: Window) -> bytes:
        # The bytes themselves, not a digest of them: a lookup hashes them once (SipHash,
        # ~1 us for 64 bars) and a hit compares them whole, so no two windows can share an
        # entry. A blake2b digest cost ~4 us and let go of the GIL mid-request (hashlib
        # does for 2 KiB and more), handing it to the audit writer's thread.
        return b"".join((_VERSION, window.timestamps.tobytes(), window.bars.tobytes()))

    def lookup(self, window: Window) -> tuple[bytes, np.ndarray | None]:
        """The window's cache key and its cached features (None on a miss or when off).

        On a miss the caller computes the features (the batcher does, for a whole batch
        at once) and hands them back with :meth:`put`.
        """
        k = self.key(window)
        if not self.enabled:
            return k, None
        cached = self._cache.get(k)
        if cached is None:
            self.misses += 1
            return k, None
        self.hits += 1
        return k, cached

    def put(self, key: bytes, features: np.ndarray) -> None:
        if self.enabled:
            features.setflags(write=False)  # shared between requests: nobody may mutate it
            self._cache[key] = features

    def __len__(self) -> int:
        return len(self._cache)
