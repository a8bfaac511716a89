"""The model versions one predictor replica holds loaded. No loading happens here.

Three places, looked up in this order:

- the default: the version in service, never evicted;
- pinned: versions the rollout controller asked for (a green, a version registry sync is
  switching to), held without a TTL for as long as the controller asks;
- the spec 4.2 TTL cache: versions clients requested explicitly.

A model is put here only once it is loaded, validated and warm
(:class:`model.service.PredictorService` does that), so whatever a lookup returns is ready
to answer. The forward thread, the preload thread and the event loop (status) all read
this, hence the lock: a TTLCache mutates even on ``get`` (expiry).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from cachetools import TTLCache

from model.common.refs import ModelRef

if TYPE_CHECKING:
    from model.runtime import LoadedModel


class LoadedVersions:
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self._lock = threading.Lock()
        self._default: LoadedModel | None = None
        self._pinned: dict[str, LoadedModel] = {}
        self._cache: TTLCache[str, LoadedModel] = TTLCache(maxsize=max_entries, ttl=ttl_s)

    @property
    def default(self) -> LoadedModel | None:
        return self._default

    def get(self, ref: ModelRef) -> LoadedModel | None:
        default = self._default  # the hot path: one attribute read, no lock
        if default is not None and default.ref == ref:
            return default
        with self._lock:
            for store in (self._pinned, self._cache):
                model = store.get(ref.key)
                if model is not None and model.ref == ref:
                    return model
        return None

    def add(self, model: LoadedModel) -> None:
        """Keep a freshly loaded model in the TTL cache."""
        with self._lock:
            self._cache[model.ref.key] = model

    def pin(self, model: LoadedModel) -> None:
        """Hold ``model`` without a TTL (unless it is the default already)."""
        with self._lock:
            if model is self._default:
                return
            self._cache.pop(model.ref.key, None)
            self._pinned[model.ref.key] = model

    def retain(self, keys: set[str]) -> None:
        """Pin exactly ``keys`` (those loaded); the rest drop to the TTL cache, where
        explicit requests can still find them until the TTL unloads them."""
        with self._lock:
            for key in [k for k in self._pinned if k not in keys]:
                self._cache[key] = self._pinned.pop(key)
            for key in keys:
                model = self._cache.pop(key, None)
                if model is not None and model is not self._default:
                    self._pinned[key] = model

    def set_default(self, model: LoadedModel) -> LoadedModel | None:
        """Make ``model`` the default; the previous one drops to the TTL cache."""
        with self._lock:
            old = self._default
            if old is model:
                return None
            self._pinned.pop(model.ref.key, None)
            self._cache.pop(model.ref.key, None)
            if old is not None:
                self._cache[old.ref.key] = old
            # One assignment: a request sees either the old default or the new one.
            self._default = model
            return old

    def pinned_keys(self) -> set[str]:
        with self._lock:
            return set(self._pinned)

    def refs(self) -> list[ModelRef]:
        """Every version held, the default first."""
        with self._lock:
            models = [self._default, *self._pinned.values(), *self._cache.values()]
        out: list[ModelRef] = []
        for model in models:
            if model is not None and model.ref not in out:
                out.append(model.ref)
        return out
