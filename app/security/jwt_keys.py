"""Key material from mounted files: the HMAC secret and a static public key PEM.

Each accepted algorithm gets its own pre-built key (an HS* algorithm the secret; the PEM
only the one algorithm its key type fits: RSA RS256, EC P-256 ES256), so the verifier picks
a key by the header's ``alg`` among the configured ones and a token can never make the
public key serve as an HMAC secret or verify under another algorithm. Both files are
re-read when they change (one ``stat`` per interval); a rotation mistake keeps the
previous key rather than locking everyone out.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

from app.security.secret_files import FileChangeProbe, fingerprint

log = structlog.get_logger("app.security.jwt")

MIN_SECRET_BYTES = 32
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "ES256"})


class JwtKeyError(RuntimeError):
    """Key material is missing, too weak or unreadable (the message never holds it)."""


def read_jwt_secret(path: Path) -> bytes:
    """The HMAC secret from a mounted file, whitespace stripped; refuses weak secrets."""
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        raise JwtKeyError(f"JWT secret file not found: {path}") from None
    except OSError as exc:
        raise JwtKeyError(f"JWT secret file {path} unreadable: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise JwtKeyError(
            f"JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes; "
            "make one with `cnnlstm secret init`"
        )
    return secret


def generate_jwt_secret() -> str:
    """A new HMAC secret: 384 random bits, URL-safe text (64 characters)."""
    return secrets.token_urlsafe(48)


def pem_algorithm(pem: bytes) -> str:
    """The one algorithm a public key (or certificate) PEM may verify."""
    key: object = (
        x509.load_pem_x509_certificate(pem).public_key()
        if b"-----BEGIN CERTIFICATE-----" in pem
        else load_pem_public_key(pem)
    )
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported public key type {type(key).__name__}")


def _hmac_keys(secret: bytes, algorithms: list[str], path: Path) -> dict[str, Key]:
    """One key per HS* algorithm; JwtKeyError for a secret python-jose will not take as
    one (a PEM key or certificate: the secret path pointed at the wrong file)."""
    try:
        return {alg: jwk.construct(secret, alg) for alg in algorithms}
    except JOSEError:
        raise JwtKeyError(
            f"JWT secret in {path} is not usable as an HMAC secret (a PEM key or certificate?)"
        ) from None


class StaticKeys:
    """The secret file and the public key file, one pre-built key per accepted algorithm."""

    def __init__(
        self,
        *,
        hmac_algorithms: list[str],
        public_algorithms: list[str],
        secret_path: Path | None,
        public_key_path: Path | None,
        reload_interval_s: float = 1.0,
    ) -> None:
        self._hmac_algs = hmac_algorithms
        self._public_algs = public_algorithms
        self.secret: bytes | None = None
        self.keys: dict[str, Key] = {}
        self._secret_probe = (
            FileChangeProbe(secret_path, reload_interval_s)
            if secret_path and hmac_algorithms
            else None
        )
        self._public_probe = (
            FileChangeProbe(public_key_path, reload_interval_s)
            if public_key_path and public_algorithms
            else None
        )
        # First load: a weak secret or a bad key is a startup error, a missing secret file a
        # warning (the service can start before the secret is mounted; HS tokens fail until).
        self._load_secret(startup=True)
        self._load_public_key(startup=True)

    def maybe_reload(self) -> None:
        if self._secret_probe is not None and self._secret_probe.changed():
            self._load_secret(startup=False)
        if self._public_probe is not None and self._public_probe.changed():
            self._load_public_key(startup=False)

    def _load_secret(self, *, startup: bool) -> None:
        probe = self._secret_probe
        if probe is None:
            return
        seen = fingerprint(probe.path)
        probe.mark_seen(seen)
        try:
            secret = read_jwt_secret(probe.path)
            keys = _hmac_keys(secret, self._hmac_algs, probe.path)
        except JwtKeyError as exc:
            if startup and seen is not None:
                raise
            log.error("jwt_secret_unavailable", error=str(exc))
            return
        # Both or neither: POST /token must sign with the secret that verifies.
        self.secret = secret
        self.keys.update(keys)
        if not startup:
            log.info("jwt_secret_rotated", path=str(probe.path))

    def _load_public_key(self, *, startup: bool) -> None:
        probe = self._public_probe
        if probe is None:
            return
        probe.mark_seen(fingerprint(probe.path))
        try:
            pem = probe.path.read_bytes()
            alg = pem_algorithm(pem)
            key = jwk.construct(pem, alg)
        except (OSError, JOSEError, ValueError, TypeError) as exc:
            problem: str | None = f"unusable: {type(exc).__name__}"
        else:
            problem = None if alg in self._public_algs else f"is an {alg} key, not accepted"
        if problem is not None:
            if startup:
                raise JwtKeyError(f"JWT public key {probe.path} {problem}") from None
            log.error("jwt_public_key_unavailable", path=str(probe.path), error=problem)
            return
        for other in self._public_algs:
            self.keys.pop(other, None)
        self.keys[alg] = key
        if not startup:
            log.info("jwt_public_key_rotated", path=str(probe.path))
