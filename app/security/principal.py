"""Who is calling: the one identity every credential type resolves to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

AuthMethodName = Literal["api_key", "jwt", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``method`` is ``"anonymous"`` only when authentication is switched off in the config;
    ``key_id`` is the API key's public id (never its secret). ``rate_limit_per_s`` and
    ``burst`` come from the key record; ``None`` means "use the configured default".
    ``priority`` lets the gateway order queued work (higher first).
    """

    subject: str
    scopes: frozenset[str]
    method: AuthMethodName
    key_id: str | None = None
    rate_limit_per_s: float | None = None
    burst: int | None = None
    priority: int = 0

    def has_scopes(self, required: Iterable[str]) -> bool:
        return self.scopes.issuperset(required)

    @property
    def rate_key(self) -> str:
        """The token-bucket key: one bucket per API key, one per JWT subject."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        return f"{self.method}:{self.subject}"
