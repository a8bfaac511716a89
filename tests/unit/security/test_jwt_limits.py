"""Optional token limits (maximum lifetime, required ``typ``), the static PEM's algorithm
pin, the new settings' validation, and the refusals reaching clients as a plain 401."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from app.config import Authentication
from app.security.jwt_tokens import (
    InvalidToken,
    JwtKeyError,
    JwtVerifier,
    generate_jwt_secret,
    mint_token,
)
from tests.support.security_app import AUDIENCE, ISSUER, MakeMaterial, asgi_client
from tests.unit.security.jwks_support import (
    AUD,
    ISS,
    JwksServer,
    claims,
    ec_key,
    public_jwk,
    rsa_key,
    sign,
)


@pytest.fixture
def secret(tmp_path: Path) -> str:
    value = generate_jwt_secret()
    (tmp_path / "jwt-secret").write_text(value)
    return value


def hs_verifier(tmp_path: Path, **kw: Any) -> JwtVerifier:
    return JwtVerifier(
        algorithms=["HS256"],
        secret_path=tmp_path / "jwt-secret",
        issuer=ISS,
        audience=AUD,
        **kw,
    )


def hs_token(secret: str, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    return pyjwt.encode(claims(**overrides), secret.encode(), algorithm="HS256", headers=headers)


def reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    return info.value.reason


# --- maximum lifetime -----------------------------------------------------------------------


def test_max_lifetime_accepts_up_to_the_limit_and_refuses_beyond(
    tmp_path: Path, secret: str
) -> None:
    verifier = hs_verifier(tmp_path, max_lifetime_s=900)
    now = int(time.time())
    assert verifier.verify(hs_token(secret, iat=now, exp=now + 900)).subject == "idp-client"
    assert reason(verifier, hs_token(secret, iat=now, exp=now + 901)) == "lifetime_too_long"
    old_iat = hs_token(secret, iat=now - 3600, exp=now + 60)  # "issued" long ago to pass
    assert reason(verifier, old_iat) == "lifetime_too_long"


def test_max_lifetime_refuses_tokens_without_iat(tmp_path: Path, secret: str) -> None:
    verifier = hs_verifier(tmp_path, max_lifetime_s=900)
    assert reason(verifier, hs_token(secret, iat=None)) == "missing_iat"


def test_without_max_lifetime_long_tokens_and_missing_iat_pass(tmp_path: Path, secret: str) -> None:
    verifier = hs_verifier(tmp_path)
    year = int(time.time()) + 365 * 86400
    assert verifier.verify(hs_token(secret, exp=year)).subject == "idp-client"
    assert verifier.verify(hs_token(secret, iat=None)).subject == "idp-client"


# --- required typ ---------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_required_typ_accepts_any_case_and_the_media_type_form(
    tmp_path: Path, secret: str, typ: str
) -> None:
    verifier = hs_verifier(tmp_path, required_typ="at+jwt")
    assert verifier.verify(hs_token(secret, headers={"typ": typ})).subject == "idp-client"


@pytest.mark.parametrize("typ", ["JWT", "at+jwt2", "application/jwt", "", None, 7])
def test_required_typ_refuses_other_or_missing_typ(tmp_path: Path, secret: str, typ: Any) -> None:
    verifier = hs_verifier(tmp_path, required_typ="application/at+jwt")
    headers = {"typ": typ} if typ is not None else {}
    token = hs_token(secret, headers=headers)
    if typ is None:  # PyJWT adds typ=JWT unless told not to
        token = pyjwt.encode(claims(), secret.encode(), algorithm="HS256", headers={"typ": None})
        assert "typ" not in pyjwt.get_unverified_header(token)
    assert reason(verifier, token) == "wrong_typ"


def test_minted_tokens_carry_at_jwt_typ_and_pass_the_typ_check(tmp_path: Path, secret: str) -> None:
    token = mint_token(secret, "svc", ["model:stats"], 300, ISS, AUD)
    assert pyjwt.get_unverified_header(token)["typ"] == "at+jwt"
    verifier = hs_verifier(tmp_path, required_typ="at+jwt", max_lifetime_s=300)
    assert verifier.verify(token).subject == "svc"


# --- static PEM pinned to its key type ------------------------------------------------------


def _public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_static_pem_verifies_only_the_algorithm_its_key_type_fits(tmp_path: Path) -> None:
    pem_path = tmp_path / "public.pem"
    pem_path.write_bytes(_public_pem(ec_key("static-ec")))
    verifier = JwtVerifier(
        algorithms=["RS256", "ES256"], secret_path=None, public_key_path=pem_path
    )
    assert verifier.key_algorithms == ["ES256"]
    token = sign(ec_key("static-ec"), None, iss=None, aud=None)
    assert verifier.verify(token).subject == "idp-client"
    assert reason(verifier, sign(rsa_key("old"), None, iss=None, aud=None)) == "no_key"


def test_static_pem_of_a_type_not_accepted_is_a_startup_error(tmp_path: Path) -> None:
    pem_path = tmp_path / "public.pem"
    pem_path.write_bytes(_public_pem(rsa_key("old")))
    with pytest.raises(JwtKeyError, match="RS256 key"):
        JwtVerifier(algorithms=["ES256"], secret_path=None, public_key_path=pem_path)


# --- settings -------------------------------------------------------------------------------


def test_new_authentication_settings_have_their_defaults() -> None:
    auth = Authentication()
    assert auth.jwt_jwks_url is None
    assert auth.jwt_jwks_refresh_min_interval_s == 60
    assert auth.jwt_jwks_cache_ttl_s == 300
    assert auth.jwt_jwks_timeout_s == 2.0
    assert auth.jwt_max_lifetime_s is None
    assert auth.jwt_required_typ is None


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_jwks_url_accepts_https_and_loopback_http(url: str) -> None:
    assert Authentication(jwt_algorithms=["RS256"], jwt_jwks_url=url).jwt_jwks_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/jwks",
        "http://127.0.0.1.evil.example/jwks",
        "ftp://idp.example.com/jwks",
        "file:///etc/jwks.json",
        "https://user:pw@idp.example.com/jwks",
        "idp.example.com/jwks",
    ],
)
def test_jwks_url_refuses_anything_else(url: str) -> None:
    with pytest.raises(ValidationError, match="jwt_jwks_url"):
        Authentication(jwt_algorithms=["RS256"], jwt_jwks_url=url)


@pytest.mark.parametrize(
    "fields",
    [
        {"jwt_jwks_url": "https://idp.example.com/jwks"},  # HS256 only: the set is never used
        {"jwt_max_lifetime_s": 600},  # token_ttl_s 900 would mint tokens we then refuse
        {"jwt_max_lifetime_s": 10, "token_ttl_s": 30},
        {"jwt_required_typ": ""},
        {"jwt_jwks_refresh_min_interval_s": 0},
        {"jwt_jwks_timeout_s": 0},
        {"jwt_jwks_timeout_s": 30},
    ],
)
def test_authentication_refuses_inconsistent_jwt_settings(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Authentication(**fields)


# --- through the edge -----------------------------------------------------------------------


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    srv = JwksServer()
    srv.publish(public_jwk(rsa_key("old"), "idp-1"))
    yield srv
    srv.stop()


async def test_jwks_typ_and_lifetime_refusals_are_plain_401s(
    make_material: MakeMaterial, idp: JwksServer
) -> None:
    material = make_material(
        {
            "security": {
                "authentication": {
                    "jwt_jwks_url": idp.url,
                    "jwt_required_typ": "at+jwt",
                    "jwt_max_lifetime_s": 900,
                }
            }
        }
    )
    key = rsa_key("old")
    good: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE}
    at_jwt = {"typ": "at+jwt"}
    tokens = {
        "ok": sign(key, "idp-1", headers=at_jwt, **good),
        "minted": mint_token(material.jwt_secret, "svc", ["model:stats"], 300, ISSUER, AUDIENCE),
        "unknown_kid": sign(rsa_key("new"), "idp-2", headers=at_jwt, **good),
        "wrong_typ": sign(key, "idp-1", **good),
        "too_long": sign(key, "idp-1", headers=at_jwt, exp=int(time.time()) + 3600, **good),
        "jku": sign(key, "idp-1", headers={**at_jwt, "jku": idp.url}, **good),
    }
    async with asgi_client(material.config) as client:
        status = {}
        for name, token in tokens.items():
            response = await client.get("/stats", headers={"Authorization": f"Bearer {token}"})
            status[name] = response.status_code
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert name not in response.text
    assert status == {
        "ok": 200,
        "minted": 200,
        "unknown_kid": 401,
        "wrong_typ": 401,
        "too_long": 401,
        "jku": 401,
    }
    assert idp.fetches == 1  # at start; the unknown kid falls within the refresh interval
