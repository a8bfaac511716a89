"""A token signed with a gateway configuration's own secret, issuer and audience."""

from __future__ import annotations

from collections.abc import Iterable

from app.config.security import Authentication
from app.security.jwt_tokens import mint_token, read_jwt_secret


def token_for(auth: Authentication, subject: str, scopes: Iterable[str], ttl_s: float = 300) -> str:
    """What ``cnnlstm security token`` prints under ``auth`` (a config's authentication)."""
    return mint_token(
        read_jwt_secret(auth.jwt_secret_path),
        subject,
        scopes,
        ttl_s,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
    )
