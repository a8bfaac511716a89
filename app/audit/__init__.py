"""The prediction audit trail (issue 14): one record per successful prediction.

- :mod:`app.audit.records`: the record and the canonical input hash (how to recompute it);
- :mod:`app.audit.writer`: ``AuditTrail``, the request path's hand-off and the writer thread;
- :mod:`app.audit.store`: one stream directory: append, seal (gzip + chain), retention;
- :mod:`app.audit.chain`: the integrity chain and ``verify_trail``;
- :mod:`app.audit.reader`: ``query_records`` for ``cnnlstm audit query``.

No FastAPI, no Ray, no gateway types: the gateway hands over plain values.
"""

from __future__ import annotations

from pathlib import Path

from app.config import ServiceConfig


def audit_root(config: ServiceConfig) -> Path | None:
    """The trail's directory under this configuration, or None when it is off."""
    return config.audit.directory(config.logging.directory)
