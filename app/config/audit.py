"""The ``audit`` section (not in the spec; issue 14): the prediction audit trail.

Every successful prediction leaves one record (``app/audit``). On by default because a
trail that someone must remember to switch on is missing exactly when it is needed; it
costs the request path one queue put (see ``app/audit/writer.py``). It needs somewhere to
write: ``path``, else ``<logging.directory>/audit``; with neither, nothing is written and
the gateway says so once at start.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from app.config.base import Section


class Audit(Section):
    enabled: bool = True
    path: Path | None = None  # None: <logging.directory>/audit
    # A file is sealed (gzipped, its digest chained) at this size or age, whichever first.
    rotate_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    rotate_s: float = Field(3600, gt=0)
    # Sealed files whose last record is older than this are removed (and the removal is
    # recorded in the chain, so `cnnlstm audit verify` still passes).
    retention_days: float = Field(365, gt=0)
    # Records waiting for the writer; beyond this they are dropped and counted
    # (audit_records_dropped_total), never allowed to slow or fail a prediction.
    queue_size: int = Field(10_000, ge=1, le=10_000_000)

    def directory(self, log_directory: Path | None) -> Path | None:
        """Where the trail lives, or None when it is off or has nowhere to go."""
        if not self.enabled:
            return None
        if self.path is not None:
            return self.path
        return log_directory / "audit" if log_directory is not None else None
