"""An identity provider's JWK set: fetched from one configured URL, cached, pinned per key.

Trust. Keys come only from ``jwt_jwks_url`` in the config (https, or http on loopback for
tests and sidecars); never from a URL or key inside a token (``jku``/``x5u``/``jwk``/``x5c``
make a token invalid in :mod:`app.security.jwt_claims` before any key is looked up).
Redirects are not followed. Each JWK is pinned to one algorithm when the set is parsed:
RSA (2048 bits or more) to RS256, EC P-256 to ES256; a JWK whose ``alg`` says otherwise,
whose ``use`` is not ``sig``, or of any other type (``oct`` included: a published HMAC
secret is no secret) is skipped. A token whose header ``alg`` differs from its key's pin is
refused, so a key can never be used with an algorithm it was not published for. Only the
public members are read; a set that also publishes private members does not change that.

Refresh, and why it is shaped like this. ``verify`` runs inside an async FastAPI
dependency, so anything it waits for stalls the event loop of that replica. Hence:

- the set is fetched once at start (construction), bounded by ``timeout_s``;
- when the cached set is older than ``cache_ttl_s``, the next lookup starts a refresh in a
  daemon thread and carries on with the cached keys (no wait on the request path);
- an unknown ``kid`` (a freshly rotated key) is the one case that waits: it starts a fetch
  and joins it for at most ``timeout_s`` (default 2 s), so the first token signed with a
  new key is accepted rather than bounced;
- every fetch, whatever started it, is rate limited to one per ``min_refresh_interval_s``
  and at most one is in flight: a flood of made-up kids costs one fetch (and at most one
  bounded stall) per interval, the rest are refused at once (reason ``unknown_kid``).

A fetch that fails (endpoint down, bad status, not a JWK set, too large) changes nothing:
the cached keys keep working and the next attempt waits for the interval. A set that does
parse replaces the cache whole, so a key the provider removed stops verifying after the
next refresh (within ``cache_ttl_s`` plus one fetch while tokens keep arriving).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from jose import jwk
from jose.backends.base import Key
from jose.exceptions import JOSEError

from app.config.security import jwks_url_problem
from app.security.jwt_claims import MAX_KID_CHARS, InvalidToken
from app.security.jwt_keys import JwtKeyError

log = structlog.get_logger("app.security.jwks")

MAX_JWKS_BYTES = 256 * 1024
MAX_JWKS_KEYS = 100
MIN_RSA_BITS = 2048
_PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y")}


class JwksError(Exception):
    """A fetch or a document failed; the cached keys stay as they were."""


class UnusableJwk(ValueError):
    """One entry of a set cannot verify anything here; it is skipped."""


@dataclass(frozen=True, slots=True)
class PinnedKey:
    """A verification key and the only algorithm it may verify."""

    alg: str
    key: Key


def _rsa_bits(n: Any) -> int:
    if not isinstance(n, str):
        raise UnusableJwk("bad_n")
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except ValueError:  # not ASCII, or not base64 (binascii.Error): this entry only
        raise UnusableJwk("bad_n") from None
    return int.from_bytes(raw, "big").bit_length()


def pin_jwk(entry: Any) -> tuple[str, PinnedKey]:
    """``(kid, key pinned to its algorithm)`` for one JWK, or :class:`UnusableJwk`."""
    if not isinstance(entry, dict):
        raise UnusableJwk("not_an_object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
        raise UnusableJwk("no_kid")
    if entry.get("use", "sig") != "sig":
        raise UnusableJwk("not_for_signatures")
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise UnusableJwk("not_for_verify")
    kty = entry.get("kty")
    if kty == "RSA":
        alg = "RS256"
        if _rsa_bits(entry.get("n")) < MIN_RSA_BITS:
            raise UnusableJwk("rsa_too_small")
    elif kty == "EC" and entry.get("crv") == "P-256":
        alg = "ES256"
    else:
        raise UnusableJwk("unsupported_key_type")
    if entry.get("alg", alg) != alg:
        raise UnusableJwk("alg_does_not_match_key")
    public = {name: entry.get(name) for name in _PUBLIC_MEMBERS[kty]}
    try:
        key = jwk.construct(public, alg)
    except (JOSEError, ValueError, TypeError) as exc:
        raise UnusableJwk(f"bad_key:{type(exc).__name__}") from None
    return kid, PinnedKey(alg=alg, key=key)


def parse_jwks(document: bytes) -> dict[str, PinnedKey]:
    """The usable keys of a JWK set document, by ``kid``. A kid listed twice is dropped
    (which of the two the provider means is unknowable)."""
    try:
        doc = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise JwksError("not_json") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise JwksError("not_a_jwk_set")
    if len(entries) > MAX_JWKS_KEYS:
        raise JwksError("too_many_keys")
    keys: dict[str, PinnedKey] = {}
    repeated: set[str] = set()
    for entry in entries:
        try:
            kid, pinned = pin_jwk(entry)
        except UnusableJwk as exc:
            log.warning("jwks_key_skipped", reason=str(exc))
            continue
        if kid in keys or kid in repeated:
            repeated.add(kid)
            keys.pop(kid, None)
            log.warning("jwks_key_skipped", reason="repeated_kid")
            continue
        keys[kid] = pinned
    return keys


def fetch_jwks_document(url: str, timeout_s: float) -> bytes:
    """GET the set: no redirects, a size cap, and ``timeout_s`` for the whole transfer."""
    deadline = time.monotonic() + timeout_s
    headers = {"Accept": "application/jwk-set+json, application/json"}
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"status_{response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError("too_large")
                if time.monotonic() > deadline:
                    raise JwksError("too_slow")
            return bytes(body)
    except httpx.HTTPError as exc:
        raise JwksError(type(exc).__name__) from None


class JwksKeySource:
    """The cached key set of one JWKS URL, refreshed as the module docstring describes."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        min_refresh_interval_s: float = 60.0,
        cache_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        prefetch: bool = True,
    ) -> None:
        problem = jwks_url_problem(url)
        if problem is not None:
            raise JwtKeyError(f"JWKS URL {problem}")
        self.url = url
        self._timeout_s = timeout_s
        self._min_interval_s = min_refresh_interval_s
        self._ttl_s = cache_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Mapping[str, PinnedKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt = float("-inf")
        self._in_flight: threading.Thread | None = None
        if prefetch:
            self._fetch_and_wait()

    @property
    def algorithms(self) -> set[str]:
        """Algorithms the cached keys are pinned to (for the startup summary)."""
        return {pinned.alg for pinned in self._keys.values()}

    def key_for(self, kid: str, alg: str) -> Key:
        """The key published as ``kid``, if it is pinned to ``alg``; else InvalidToken."""
        pinned = self._keys.get(kid)
        if pinned is None:
            # A rotated-in key: worth one bounded wait, rate limited across all kids.
            self._fetch_and_wait()
            pinned = self._keys.get(kid)
            if pinned is None:
                raise InvalidToken("unknown_kid")
        else:
            self._refresh_if_stale()
        if pinned.alg != alg:
            raise InvalidToken("key_algorithm_mismatch")
        return pinned.key

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Block until no fetch is in flight (tests, orderly shutdown)."""
        thread = self._in_flight
        if thread is not None:
            thread.join(timeout_s)

    # --- refresh -------------------------------------------------------------------------

    def _refresh_if_stale(self) -> None:
        fetched_at = self._fetched_at
        if fetched_at is None or self._clock() - fetched_at >= self._ttl_s:
            self._start_fetch()  # in the background: keep serving the cached keys

    def _fetch_and_wait(self) -> None:
        thread = self._start_fetch()
        if thread is not None:
            # A fetch still running after this finishes in the background and installs then.
            thread.join(self._timeout_s)

    def _start_fetch(self) -> threading.Thread | None:
        with self._lock:
            now = self._clock()
            if self._in_flight is not None or now - self._last_attempt < self._min_interval_s:
                return None
            self._last_attempt = now
            thread = threading.Thread(target=self._fetch_and_install, name="jwks-refresh")
            thread.daemon = True
            self._in_flight = thread
        thread.start()
        return thread

    def _fetch_and_install(self) -> None:
        keys: dict[str, PinnedKey] | None = None
        try:
            keys = parse_jwks(fetch_jwks_document(self.url, self._timeout_s))
        except JwksError as exc:
            log.warning("jwks_fetch_failed", url=self.url, error=str(exc), cached=len(self._keys))
        except Exception as exc:  # a refresh thread must never die silently
            log.error("jwks_fetch_failed", url=self.url, error=type(exc).__name__)
        with self._lock:
            self._in_flight = None
            if keys is None:
                return
            added = sorted(set(keys) - set(self._keys))
            removed = sorted(set(self._keys) - set(keys))
            self._keys = keys
            self._fetched_at = self._clock()
        if added or removed or not keys:
            log.info("jwks_refreshed", url=self.url, keys=len(keys), added=added, removed=removed)
