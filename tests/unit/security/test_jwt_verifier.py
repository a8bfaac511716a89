"""JWT verification: the accept/reject matrix, key handling, rotation, minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from jose import jwt as jose_jwt

from app.security import secret_files
from app.security.jwt_tokens import (
    MAX_TOKEN_BYTES,
    InvalidToken,
    JwtKeyError,
    JwtVerifier,
    generate_jwt_secret,
    mint_token,
    read_jwt_secret,
)
from tests.support.security_app import rsa_key_pair

ISS = "https://issuer.test"
AUD = "cnnlstm-api"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def secret(tmp_path: Path) -> str:
    value = generate_jwt_secret()
    (tmp_path / "jwt-secret").write_text(f"  {value}\n")  # whitespace is stripped
    return value


@pytest.fixture
def public_key_path(tmp_path: Path) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(rsa_key_pair()[1])
    return path


def make_verifier(tmp_path: Path, algorithms: list[str] | None = None, **kw: Any) -> JwtVerifier:
    algorithms = algorithms or ["HS256", "RS256"]
    return JwtVerifier(
        algorithms=algorithms,
        secret_path=tmp_path / "jwt-secret",
        public_key_path=tmp_path / "public.pem" if "RS256" in algorithms else None,
        issuer=kw.pop("issuer", ISS),
        audience=kw.pop("audience", AUD),
        leeway_s=kw.pop("leeway_s", 30),
        reload_interval_s=kw.pop("reload_interval_s", 0.0),
    )


@pytest.fixture
def verifier(tmp_path: Path, secret: str, public_key_path: Path) -> JwtVerifier:
    return make_verifier(tmp_path)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "scope": "model:stats",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "iss": ISS,
        "aud": AUD,
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def reason(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    return info.value.reason


# --- accepted -------------------------------------------------------------------------------


def test_verify_accepts_when_minted_by_mint_token(verifier: JwtVerifier, secret: str) -> None:
    token = mint_token(secret, "alice", ["model:stats", "model:predict"], 300, ISS, AUD)
    verified = verifier.verify(token)
    assert verified.subject == "alice"
    assert verified.scopes == frozenset({"model:stats", "model:predict"})


def test_verify_accepts_when_minted_by_python_jose(verifier: JwtVerifier, secret: str) -> None:
    token = jose_jwt.encode(claims(), secret, algorithm="HS256")
    assert verifier.verify(token).scopes == frozenset({"model:stats"})


def test_verify_accepts_when_minted_by_pyjwt_with_same_secret(
    verifier: JwtVerifier, secret: str
) -> None:
    token = pyjwt.encode(claims(), secret.encode(), algorithm="HS256")
    assert verifier.verify(token).subject == "alice"


def test_verify_accepts_when_rs256_signed_by_private_key(verifier: JwtVerifier) -> None:
    token = pyjwt.encode(claims(), rsa_key_pair()[0], algorithm="RS256")
    assert verifier.verify(token).subject == "alice"


def test_scopes_come_from_the_scope_string_only(verifier: JwtVerifier, secret: str) -> None:
    token = pyjwt.encode(claims(scope="a:b c:d", scp=["e:f"]), secret.encode(), algorithm="HS256")
    assert verifier.verify(token).scopes == frozenset({"a:b", "c:d"})


@pytest.mark.parametrize("scp", [["model:stats", "model:predict"], "model:stats model:predict"])
def test_scp_claim_grants_no_scope(verifier: JwtVerifier, secret: str, scp: Any) -> None:
    token = pyjwt.encode(claims(scope=None, scp=scp), secret.encode(), algorithm="HS256")
    assert verifier.verify(token).scopes == frozenset()


def test_verify_accepts_when_time_claims_are_floats(verifier: JwtVerifier, secret: str) -> None:
    now = time.time()
    token = jose_jwt.encode(
        claims(iat=now - 0.5, nbf=now - 0.5, exp=now + 300.25), secret, algorithm="HS256"
    )
    assert verifier.verify(token).expires_at == pytest.approx(now + 300.25)


def test_verify_accepts_when_nbf_is_within_leeway(verifier: JwtVerifier, secret: str) -> None:
    token = pyjwt.encode(claims(nbf=int(time.time()) + 20), secret.encode(), algorithm="HS256")
    assert verifier.verify(token).subject == "alice"


def test_verify_accepts_when_expired_within_leeway(verifier: JwtVerifier, secret: str) -> None:
    token = pyjwt.encode(claims(exp=int(time.time()) - 10), secret.encode(), algorithm="HS256")
    assert verifier.verify(token).subject == "alice"


# --- rejected -------------------------------------------------------------------------------


def test_verify_rejects_when_alg_none(verifier: JwtVerifier) -> None:
    for alg in ("none", "None"):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        token = f"{header}.{_b64(json.dumps(claims()).encode())}."
        assert reason(verifier, token) == "algorithm_not_allowed"


def test_verify_rejects_when_hs256_signed_with_the_public_key(verifier: JwtVerifier) -> None:
    public_pem = rsa_key_pair()[1]
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims()).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert reason(verifier, f"{signing_input}.{_b64(signature)}") == "invalid"


def test_verify_rejects_hs256_when_only_rs256_is_configured(
    tmp_path: Path, secret: str, public_key_path: Path
) -> None:
    only_rs = make_verifier(tmp_path, ["RS256"])
    token = pyjwt.encode(claims(), secret.encode(), algorithm="HS256")
    assert reason(only_rs, token) == "algorithm_not_allowed"


def test_verify_rejects_rs256_when_only_hs256_is_configured(tmp_path: Path, secret: str) -> None:
    only_hs = make_verifier(tmp_path, ["HS256"])
    token = pyjwt.encode(claims(), rsa_key_pair()[0], algorithm="RS256")
    assert reason(only_hs, token) == "algorithm_not_allowed"


def test_verify_rejects_hs512_when_not_in_the_pinned_list(
    verifier: JwtVerifier, secret: str
) -> None:
    token = pyjwt.encode(claims(), secret.encode(), algorithm="HS512")
    assert reason(verifier, token) == "algorithm_not_allowed"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"exp": None}, "invalid"),
        ({"nbf": lambda: int(time.time()) + 600}, "claims"),  # times: when the test runs
        ({"iat": lambda: int(time.time()) + 600}, "issued_in_future"),
        ({"iss": "https://evil.example"}, "claims"),
        ({"iss": None}, "invalid"),
        ({"aud": "other-api"}, "claims"),
        ({"aud": None}, "invalid"),
        ({"sub": None}, "claims"),
        ({"scope": 42}, "claims"),
        ({"exp": "soon"}, "claims"),
        ({"exp": [1]}, "invalid"),
    ],
)
def test_verify_rejects_when_claims_are_bad(
    verifier: JwtVerifier, secret: str, overrides: dict[str, Any], expected: str
) -> None:
    now = {k: v() if callable(v) else v for k, v in overrides.items()}
    token = jose_jwt.encode(claims(**now), secret, algorithm="HS256")
    assert reason(verifier, token) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # python-jose alone runs int() on these, so it would take them. The times are
        # taken when the test runs (a callable), not when it is collected: a long suite
        # would otherwise let the "future" exp pass and the token read as expired.
        ({"exp": lambda: str(int(time.time()) + 300)}, "bad_claim_type"),
        ({"nbf": lambda: str(int(time.time()))}, "bad_claim_type"),
        ({"nbf": True}, "bad_claim_type"),
        ({"nbf": False}, "bad_claim_type"),
        ({"iat": lambda: str(int(time.time()))}, "bad_claim_type"),
        ({"iat": True}, "bad_claim_type"),
        ({"iat": False}, "bad_claim_type"),
        ({"exp": True}, "expired"),  # int(True) == 1: jose already refuses it
        # A JSON integer has no size limit; one past any float is no time at all.
        ({"exp": 10**400}, "bad_claim_type"),
        ({"iat": 10**400}, "bad_claim_type"),
        ({"iat": -(10**400)}, "bad_claim_type"),
    ],
)
def test_verify_rejects_when_a_time_claim_is_not_a_json_number(
    verifier: JwtVerifier, secret: str, overrides: dict[str, Any], expected: str
) -> None:
    now = {k: v() if callable(v) else v for k, v in overrides.items()}
    token = jose_jwt.encode(claims(**now), secret, algorithm="HS256")
    assert reason(verifier, token) == expected


@pytest.mark.parametrize("scope", [["model:stats"], {"model:stats": True}, 1.5, True])
def test_verify_rejects_when_scope_is_not_a_string(
    verifier: JwtVerifier, secret: str, scope: Any
) -> None:
    token = jose_jwt.encode(claims(scope=scope), secret, algorithm="HS256")
    assert reason(verifier, token) == "claims"


def test_verify_rejects_when_payload_tampered(verifier: JwtVerifier, secret: str) -> None:
    header, _, signature = pyjwt.encode(claims(), secret.encode(), algorithm="HS256").split(".")
    forged = _b64(json.dumps(claims(sub="admin", scope="model:stats model:predict")).encode())
    assert reason(verifier, f"{header}.{forged}.{signature}") == "invalid"


def test_verify_rejects_when_signed_with_another_secret(verifier: JwtVerifier) -> None:
    token = pyjwt.encode(claims(), generate_jwt_secret().encode(), algorithm="HS256")
    assert reason(verifier, token) == "invalid"


def test_verify_rejects_when_token_over_8kb_before_parsing(verifier: JwtVerifier) -> None:
    assert reason(verifier, "a" * (MAX_TOKEN_BYTES + 1)) == "too_large"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "....", "eyJhbGciOi.e30.", "ünïcode.x.y"])
def test_verify_rejects_when_token_is_garbage(verifier: JwtVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


# --- keys -----------------------------------------------------------------------------------


def test_read_jwt_secret_strips_whitespace(tmp_path: Path, secret: str) -> None:
    assert read_jwt_secret(tmp_path / "jwt-secret") == secret.encode()


def test_verifier_refuses_to_start_when_secret_shorter_than_32_bytes(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("x" * 31 + "\n")
    with pytest.raises(JwtKeyError, match="shorter than 32 bytes") as info:
        make_verifier(tmp_path, ["HS256"])
    assert "x" * 31 not in str(info.value)


def test_verifier_starts_without_hs_key_when_secret_file_missing(tmp_path: Path) -> None:
    verifier = make_verifier(tmp_path, ["HS256"])
    token = mint_token(generate_jwt_secret(), "alice", ["model:stats"], 60, ISS, AUD)
    assert reason(verifier, token) == "no_key"
    assert verifier.signing_secret() is None


def test_verifier_refuses_rs256_when_public_key_path_missing(tmp_path: Path) -> None:
    with pytest.raises(JwtKeyError, match="jwt_public_key_path"):
        JwtVerifier(algorithms=["RS256"], secret_path=None, public_key_path=None)


def test_verifier_uses_new_secret_when_file_rotated(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [50.0]
    monkeypatch.setattr(secret_files.time, "monotonic", lambda: clock[0])
    verifier = make_verifier(tmp_path, ["HS256"], reload_interval_s=1.0)
    old_token = mint_token(secret, "alice", ["model:stats"], 300, ISS, AUD)
    new_secret = generate_jwt_secret()
    secret_files.atomic_write_private(tmp_path / "jwt-secret", new_secret.encode())
    new_token = mint_token(new_secret, "alice", ["model:stats"], 300, ISS, AUD)
    assert verifier.verify(old_token).subject == "alice"  # not re-read within the second
    clock[0] += 1.5
    assert reason(verifier, old_token) == "invalid"
    assert verifier.verify(new_token).subject == "alice"


def test_verifier_keeps_old_secret_when_rotated_to_a_weak_one(tmp_path: Path, secret: str) -> None:
    verifier = make_verifier(tmp_path, ["HS256"])
    (tmp_path / "jwt-secret").write_text("short")
    token = mint_token(secret, "alice", ["model:stats"], 300, ISS, AUD)
    assert verifier.verify(token).subject == "alice"


def test_verifier_keeps_old_secret_when_rotated_to_a_public_key_pem(
    tmp_path: Path, secret: str
) -> None:
    # A PEM is long enough to pass the length check, but python-jose refuses it as an
    # HMAC secret: the rotation must be refused whole, the same as a weak secret.
    verifier = make_verifier(tmp_path, ["HS256"])
    (tmp_path / "jwt-secret").write_bytes(rsa_key_pair()[1])
    token = mint_token(secret, "alice", ["model:stats"], 300, ISS, AUD)
    assert verifier.verify(token).subject == "alice"
    assert verifier.signing_secret() == secret.encode()  # POST /token signs what verifies


def test_verifier_refuses_to_start_when_secret_is_a_public_key_pem(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_bytes(rsa_key_pair()[1])
    with pytest.raises(JwtKeyError, match="HMAC"):
        make_verifier(tmp_path, ["HS256"])


# --- minting --------------------------------------------------------------------------------


def test_mint_token_sets_exp_iat_nbf_scope_iss_aud(secret: str) -> None:
    token = mint_token(secret, "svc", ["b:x", "a:y"], 900, ISS, AUD, now=1_800_000_000)
    decoded = pyjwt.decode(
        token,
        secret.encode(),
        algorithms=["HS256"],
        audience=AUD,
        issuer=ISS,
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert decoded["sub"] == "svc"
    assert decoded["scope"] == "a:y b:x"
    assert decoded["iat"] == decoded["nbf"] == 1_800_000_000
    assert decoded["exp"] == 1_800_000_900
    assert len(decoded["jti"]) >= 16


def test_mint_token_refuses_when_secret_is_weak() -> None:
    with pytest.raises(JwtKeyError):
        mint_token("too-short", "svc", ["model:stats"], 60)
