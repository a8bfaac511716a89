"""Which JWKS key verifies what: algorithm pins, skipped entries, and tokens that try to
bring their own key (``jku``/``x5u``/``jwk``/``x5c``) never causing a fetch."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from app.security.jwks import (
    MAX_JWKS_BYTES,
    MAX_JWKS_KEYS,
    JwksError,
    JwksKeySource,
    UnusableJwk,
    parse_jwks,
    pin_jwk,
)
from app.security.jwt_tokens import InvalidToken, JwtKeyError, JwtVerifier, mint_token
from tests.support.security_app import rsa_key_pair
from tests.unit.security.jwks_support import (
    AUD,
    ISS,
    Clock,
    JwksServer,
    claims,
    ec_key,
    public_jwk,
    rsa_key,
    sign,
)

RSA = rsa_key("old")
EC = ec_key("ec")
ATTACKER = rsa_key("attacker")


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    srv.publish(public_jwk(RSA, "rsa-1"), public_jwk(EC, "ec-1"))
    yield srv
    srv.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(
    server: JwksServer, clock: Clock, algorithms: list[str] | None = None, **kw: Any
) -> JwtVerifier:
    source = JwksKeySource(server.url, min_refresh_interval_s=60, cache_ttl_s=300, clock=clock)
    return JwtVerifier(
        algorithms=algorithms or ["RS256", "ES256"],
        secret_path=kw.pop("secret_path", None),
        issuer=ISS,
        audience=AUD,
        jwks=source,
        **kw,
    )


def reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    return info.value.reason


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- tokens that bring their own key --------------------------------------------------------


def test_token_key_headers_never_cause_a_fetch_and_are_refused(
    server: JwksServer, clock: Clock
) -> None:
    attacker = JwksServer()
    attacker.publish(public_jwk(ATTACKER, "evil"))
    verifier = make_verifier(server, clock)
    clock.advance(3600)  # a refresh would be allowed now: none may happen all the same
    attempts: list[tuple[str | None, dict[str, Any]]] = [
        ("evil", {"jku": attacker.url}),
        ("evil", {"x5u": attacker.url}),
        ("evil", {"jwk": public_jwk(ATTACKER, "evil")}),
        (None, {"jwk": public_jwk(ATTACKER, "evil")}),
        ("evil", {"x5c": ["MIIB"]}),
    ]
    for kid, headers in attempts:
        assert reason(verifier, sign(ATTACKER, kid, headers=headers)) == "untrusted_key_header"
    # Even the right key and kid do not make such a header acceptable.
    assert reason(verifier, sign(RSA, "rsa-1", headers={"jku": server.url})) == (
        "untrusted_key_header"
    )
    assert attacker.fetches == 0
    assert server.fetches == 1  # the start fetch only
    attacker.stop()


def test_crit_header_is_refused(server: JwksServer, clock: Clock) -> None:
    verifier = make_verifier(server, clock)
    token = sign(RSA, "rsa-1", headers={"crit": ["exp"]})
    assert reason(verifier, token) == "unsupported_crit"


# --- algorithm pins -------------------------------------------------------------------------


def test_token_alg_differing_from_its_keys_pin_is_refused(server: JwksServer, clock: Clock) -> None:
    verifier = make_verifier(server, clock)
    assert reason(verifier, sign(EC, "rsa-1")) == "key_algorithm_mismatch"
    assert reason(verifier, sign(RSA, "ec-1")) == "key_algorithm_mismatch"
    assert verifier.verify(sign(RSA, "rsa-1")).subject == "idp-client"


def test_es256_key_in_the_set_is_unused_when_only_rs256_is_accepted(
    server: JwksServer, clock: Clock
) -> None:
    verifier = make_verifier(server, clock, ["RS256"])
    assert reason(verifier, sign(EC, "ec-1")) == "algorithm_not_allowed"
    assert verifier.key_algorithms == ["RS256"]


def test_hs256_token_naming_a_jwks_kid_never_uses_that_public_key(
    server: JwksServer, clock: Clock, tmp_path: Path
) -> None:
    secret = tmp_path / "jwt-secret"
    secret.write_text("s" * 48)
    verifier = make_verifier(server, clock, ["HS256", "RS256"], secret_path=secret)
    public_pem = RSA.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims()).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert reason(verifier, f"{signing_input}.{_b64(signature)}") == "invalid"


def test_static_pem_and_hmac_secret_keep_working_next_to_jwks(
    server: JwksServer, clock: Clock, tmp_path: Path
) -> None:
    private_pem, public_pem = rsa_key_pair()
    (tmp_path / "public.pem").write_bytes(public_pem)
    (tmp_path / "jwt-secret").write_text("s" * 48)
    verifier = make_verifier(
        server,
        clock,
        ["HS256", "RS256", "ES256"],
        secret_path=tmp_path / "jwt-secret",
        public_key_path=tmp_path / "public.pem",
    )
    static_private = serialization.load_pem_private_key(private_pem, password=None)
    assert verifier.verify(sign(static_private, None)).subject == "idp-client"  # type: ignore[arg-type]
    hs_token = mint_token("s" * 48, "svc", ["model:stats"], 300, ISS, AUD)
    assert verifier.verify(hs_token).subject == "svc"
    assert verifier.verify(sign(RSA, "rsa-1")).subject == "idp-client"
    assert verifier.verify(sign(EC, "ec-1")).subject == "idp-client"
    # With a JWKS configured, a kid is looked up there only, never in the static PEM.
    assert reason(verifier, sign(static_private, "static")) == "unknown_kid"  # type: ignore[arg-type]
    assert verifier.key_algorithms == ["ES256", "HS256", "RS256"]


def test_jwks_source_refuses_plain_http_beyond_loopback() -> None:
    with pytest.raises(JwtKeyError, match="https"):
        JwksKeySource("http://idp.example.com/jwks.json", prefetch=False)


# --- parsing the set ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (public_jwk(RSA, "k", alg="RS512"), "alg_does_not_match_key"),
        (public_jwk(RSA, "k", alg="ES256"), "alg_does_not_match_key"),
        (public_jwk(RSA, "k", alg="HS256"), "alg_does_not_match_key"),
        (public_jwk(EC, "k", alg="RS256"), "alg_does_not_match_key"),
        (public_jwk(EC, "k", crv="P-384"), "unsupported_key_type"),
        ({"kty": "oct", "kid": "k", "k": _b64(b"s" * 32)}, "unsupported_key_type"),
        (public_jwk(RSA, "k", use="enc"), "not_for_signatures"),
        (public_jwk(RSA, "k", key_ops=["encrypt"]), "not_for_verify"),
        (public_jwk(rsa_key("small", 1024), "k"), "rsa_too_small"),
        (public_jwk(RSA, "k", kid=None), "no_kid"),
        (public_jwk(RSA, "k", n="A"), "bad_n"),  # not base64url (bad length)
        (public_jwk(RSA, "k", n="\u00e9" * 400), "bad_n"),  # not ASCII
        (public_jwk(EC, "k", y=public_jwk(EC, "k")["x"]), "bad_key"),
        ("not-an-object", "not_an_object"),
    ],
)
def test_pin_jwk_skips_entries_that_cannot_verify_here(entry: Any, expected: str) -> None:
    with pytest.raises(UnusableJwk) as info:
        pin_jwk(entry)
    assert str(info.value).split(":")[0] == expected


def test_pin_jwk_pins_by_key_type_when_alg_is_absent() -> None:
    assert pin_jwk(public_jwk(RSA, "r", alg=None, use=None))[1].alg == "RS256"
    assert pin_jwk(public_jwk(EC, "e", alg=None, key_ops=["verify"]))[1].alg == "ES256"


def test_parse_jwks_drops_a_repeated_kid_and_keeps_the_rest() -> None:
    doc = {"keys": [public_jwk(RSA, "dup"), public_jwk(EC, "dup"), public_jwk(EC, "ok")]}
    assert set(parse_jwks(json.dumps(doc).encode())) == {"ok"}


def test_a_malformed_entry_does_not_keep_a_removed_key_verifying(
    server: JwksServer, clock: Clock
) -> None:
    verifier = make_verifier(server, clock)
    assert verifier.verify(sign(RSA, "rsa-1")).subject == "idp-client"
    # The provider rotates rsa-1 out; its new set also holds one entry nothing can read.
    server.publish(public_jwk(EC, "ec-2"), public_jwk(RSA, "broken", n="A"))
    clock.advance(60)
    assert verifier.verify(sign(EC, "ec-2")).subject == "idp-client"
    assert reason(verifier, sign(RSA, "rsa-1")) == "unknown_kid"


@pytest.mark.parametrize(
    "document",
    [
        b"[]",
        b'{"keys": {}}',
        json.dumps({"keys": [public_jwk(EC, f"k{i}") for i in range(MAX_JWKS_KEYS + 1)]}).encode(),
    ],
)
def test_parse_jwks_refuses_documents_that_are_not_a_small_set(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


def test_oversized_set_is_not_installed(server: JwksServer, clock: Clock) -> None:
    verifier = make_verifier(server, clock)
    server.document = json.dumps(
        {"keys": [public_jwk(EC, "new")], "pad": "x" * MAX_JWKS_BYTES}
    ).encode()
    clock.advance(60)
    assert reason(verifier, sign(EC, "new")) == "unknown_kid"
    assert verifier.verify(sign(RSA, "rsa-1")).subject == "idp-client"
    assert server.fetches == 2
