"""Identity of one servable model artifact. Pure Python: the gateway imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model version pinned to the exact weights it was validated with."""

    name: str
    version: str
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}:{self.sha256[:12]}"

    def to_json(self) -> dict[str, str]:
        """The ``{name, version, sha256}`` object every API answer and state file shows."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}
