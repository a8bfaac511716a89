"""JWKS key source against a real local endpoint: caching, rotation, outages, floods."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.security.jwks import JwksKeySource
from app.security.jwt_tokens import InvalidToken, JwtVerifier
from tests.unit.security.jwks_support import (
    AUD,
    ISS,
    Clock,
    JwksServer,
    ec_key,
    public_jwk,
    rsa_key,
    sign,
)

MIN_INTERVAL_S = 60.0
CACHE_TTL_S = 300.0

OLD = rsa_key("old")
NEW = rsa_key("new")
EC = ec_key("ec")


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    srv.publish(public_jwk(OLD, "old"), public_jwk(EC, "ec"))
    yield srv
    srv.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(server: JwksServer, clock: Clock, **kw: Any) -> JwtVerifier:
    source = JwksKeySource(
        server.url,
        timeout_s=kw.pop("timeout_s", 2.0),
        min_refresh_interval_s=MIN_INTERVAL_S,
        cache_ttl_s=CACHE_TTL_S,
        clock=clock,
    )
    return JwtVerifier(
        algorithms=kw.pop("algorithms", ["RS256", "ES256"]),
        secret_path=None,
        issuer=ISS,
        audience=AUD,
        jwks=source,
        **kw,
    )


@pytest.fixture
def verifier(server: JwksServer, clock: Clock) -> JwtVerifier:
    return make_verifier(server, clock)


def reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    return info.value.reason


def wait_idle(verifier: JwtVerifier) -> None:
    assert verifier.jwks is not None
    verifier.jwks.wait_idle(5.0)


def test_verify_accepts_rs256_and_es256_when_kid_is_published(
    server: JwksServer, verifier: JwtVerifier
) -> None:
    assert verifier.verify(sign(OLD, "old")).subject == "idp-client"
    assert verifier.verify(sign(EC, "ec")).scopes == frozenset({"model:stats"})
    assert server.fetches == 1  # the fetch at start; every later token used the cache
    assert verifier.key_algorithms == ["ES256", "RS256"]


def test_verify_accepts_new_key_after_one_refresh_when_published_later(
    server: JwksServer, verifier: JwtVerifier, clock: Clock
) -> None:
    server.publish(public_jwk(OLD, "old"), public_jwk(NEW, "new"))
    new_token = sign(NEW, "new")
    clock.advance(1)
    assert reason(verifier, new_token) == "unknown_kid"  # the start fetch was a second ago
    assert server.fetches == 1
    clock.advance(MIN_INTERVAL_S)
    assert verifier.verify(new_token).subject == "idp-client"
    assert verifier.verify(sign(OLD, "old")).subject == "idp-client"
    assert server.fetches == 2


def test_verify_refuses_removed_key_after_a_background_refresh(
    server: JwksServer, verifier: JwtVerifier, clock: Clock
) -> None:
    old_token = sign(OLD, "old")
    server.publish(public_jwk(EC, "ec"))
    clock.advance(CACHE_TTL_S)
    # Stale set: this token is still served from the cache while a refresh runs behind it.
    assert verifier.verify(old_token).subject == "idp-client"
    wait_idle(verifier)
    assert server.fetches == 2
    assert reason(verifier, old_token) == "unknown_kid"
    assert verifier.verify(sign(EC, "ec")).subject == "idp-client"
    assert server.fetches == 2


def test_verify_refuses_removed_key_after_an_unknown_kid_refresh(
    server: JwksServer, verifier: JwtVerifier, clock: Clock
) -> None:
    old_token = sign(OLD, "old")
    server.publish(public_jwk(NEW, "new"))
    clock.advance(MIN_INTERVAL_S)
    assert verifier.verify(sign(NEW, "new")).subject == "idp-client"
    assert reason(verifier, old_token) == "unknown_kid"
    assert server.fetches == 2


@pytest.mark.parametrize("outage", ["stopped", "status_500", "not_json", "not_a_set", "redirect"])
def test_cached_keys_keep_verifying_when_endpoint_fails(
    server: JwksServer, verifier: JwtVerifier, clock: Clock, outage: str
) -> None:
    elsewhere = JwksServer()
    elsewhere.publish(public_jwk(NEW, "new"))
    if outage == "stopped":
        server.stop()
    elif outage == "status_500":
        server.status = 500
    elif outage == "not_json":
        server.document = b"<html>maintenance</html>"
    elif outage == "not_a_set":
        server.document = b'{"keys": "none"}'
    else:  # a redirect is never followed, not even to a real set
        server.redirect_to = elsewhere.url
    old_token = sign(OLD, "old")
    for _ in range(3):
        clock.advance(CACHE_TTL_S)
        assert verifier.verify(old_token).subject == "idp-client"
        wait_idle(verifier)
    clock.advance(MIN_INTERVAL_S)
    assert reason(verifier, sign(NEW, "new")) == "unknown_kid"
    assert verifier.verify(old_token).subject == "idp-client"
    assert verifier.verify(sign(EC, "ec")).subject == "idp-client"
    assert elsewhere.fetches == 0
    elsewhere.stop()


def test_unknown_kids_cause_at_most_one_fetch_per_interval(
    server: JwksServer, verifier: JwtVerifier, clock: Clock
) -> None:
    clock.advance(MIN_INTERVAL_S)
    for i in range(1000):
        assert reason(verifier, sign(EC, f"made-up-{i}")) == "unknown_kid"
    assert server.fetches == 2  # the start, then one for the whole flood
    clock.advance(MIN_INTERVAL_S - 1)
    for i in range(100):
        assert reason(verifier, sign(EC, f"more-{i}")) == "unknown_kid"
    assert server.fetches == 2
    clock.advance(1)
    for i in range(1000):
        assert reason(verifier, sign(EC, f"again-{i}")) == "unknown_kid"
    assert server.fetches == 3
    assert verifier.verify(sign(EC, "ec")).subject == "idp-client"


def test_unknown_kid_waits_at_most_the_timeout_when_endpoint_hangs(
    server: JwksServer, clock: Clock
) -> None:
    verifier = make_verifier(server, clock, timeout_s=0.3)
    server.delay_s = 3.0
    clock.advance(MIN_INTERVAL_S)
    started = time.monotonic()
    assert reason(verifier, sign(NEW, "new")) == "unknown_kid"
    assert time.monotonic() - started < 2.0
    assert verifier.verify(sign(OLD, "old")).subject == "idp-client"


def test_verifier_starts_and_fetches_later_when_endpoint_down_at_start(clock: Clock) -> None:
    server = JwksServer()
    server.status = 503
    verifier = make_verifier(server, clock)
    token = sign(OLD, "old")
    assert reason(verifier, token) == "unknown_kid"
    server.status = 200
    server.publish(public_jwk(OLD, "old"))
    clock.advance(MIN_INTERVAL_S)
    assert verifier.verify(token).subject == "idp-client"
    assert server.fetches == 2
    server.stop()
