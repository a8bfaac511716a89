"""Spec 4.2 feature cache: raw OHLCV window -> engineered features.

The key is a digest of the exact bytes of the window (timestamps and all five columns)
plus the feature spec version, so a changed bar, a shifted window or a new feature
definition can never be answered from the cache; TTL and size bound it.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cachetools import TTLCache

from app.gateway.windows import Window
from model.common.features import FEATURE_SPEC_VERSION


class FeatureCache:
    def __init__(self, *, ttl_seconds: float, max_entries: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self._cache: TTLCache[bytes, np.ndarray] = TTLCache(maxsize=max_entries, ttl=ttl_seconds)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(window: Window) -> bytes:
        h = hashlib.blake2b(digest_size=20)
        h.update(FEATURE_SPEC_VERSION.encode())
        h.update(window.timestamps.tobytes())
        h.update(window.bars.tobytes())
        return h.digest()

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
