"""The audit trail seen from the API: one record per answered item, none for failures.

Each record's input hash is recomputed here from the request body, the way an auditor
would (app/audit/records.py documents it), and no record holds a credential.
"""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from app.api.app import create_app
from app.audit.chain import verify_trail
from app.audit.reader import Query, query_records
from app.gateway.cluster import StaticCluster
from app.gateway.state import build_gateway_state
from app.security.api_keys import SECRET_LENGTH, ApiKeyStore
from app.security.jwt_tokens import read_jwt_secret
from model.common.failures import FailureKind
from model.common.protocol import PredictError
from model.export import make_random_artifact
from tests.fakes import FakePredictor
from tests.support.live import columnar_bars
from tests.support.security_app import write_security_material
from tests.support.tokens import token_for

COLUMNS = ("open", "high", "low", "close", "volume")


def auditor_hash(body: dict[str, Any]) -> str:
    ts = np.asarray(body["timestamps"][-64:], dtype="<i8")
    bars = np.column_stack([np.asarray(body[c][-64:], dtype="<f8") for c in COLUMNS])
    return hashlib.sha256(ts.tobytes() + bars.tobytes()).hexdigest()


def _bars(symbol: str, shift: float, n: int = 64) -> dict[str, Any]:
    body = columnar_bars(symbol, n)
    for c in ("open", "high", "low", "close"):
        body[c] = [x + shift for x in body[c]]
    return body


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of good and bad requests; what was sent and answered, and the trail after."""
    tmp_path = tmp_path_factory.mktemp("audit-api")
    ref = make_random_artifact(tmp_path / "models", version="1.0.0", seed=1)
    audit_dir = tmp_path / "audit"
    material = write_security_material(
        tmp_path,
        overrides={
            "model_registry": {"path": str(tmp_path / "models")},
            "network_security": {"limits": {"max_body_bytes": 1_048_576}},
            "audit": {"path": str(audit_dir)},
        },
    )
    config = material.config
    _, key = ApiKeyStore(config.security.authentication.api_key_store_path).create(
        owner="api-tests", scopes=["model:predict"]
    )
    auth = config.security.authentication
    token = token_for(auth, "desk-7", ["model:predict"])
    fake = FakePredictor(ref=ref)
    state = build_gateway_state(
        config, dispatch=fake.dispatch, probe=fake.status, cluster=StaticCluster({})
    )
    app = create_app(config, state, metrics_registry=state.metrics.registry)
    by_key = {"X-API-Key": key}
    good: list[tuple[str, dict[str, Any], dict[str, Any], str]] = []  # rid, body, answer, who
    failed: list[str] = []
    with TestClient(app) as client:

        def send(path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            r = client.post(path, json=body, headers=headers)
            if r.status_code != 200:
                failed.append(r.headers["x-request-id"])
            return r

        for i in range(3):
            body = _bars(f"K{i}", 0.1 * i, n=64 + 10 * i)
            r = send("/predict", body, by_key)
            assert r.status_code == 200, r.text
            good.append((r.json()["request_id"], body, r.json(), "api-tests"))
        items = [_bars(f"B{i}", 1.0 + i) for i in range(3)]
        r = send("/predict/batch", {"items": items}, by_key)
        assert r.status_code == 200, r.text
        for body, pred in zip(items, r.json()["predictions"], strict=True):
            good.append((r.json()["request_id"], body, pred, "api-tests"))
        body = _bars("JWT", 2.5)
        r = send("/predict", body, {"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        good.append((r.json()["request_id"], body, r.json(), "desk-7"))

        assert send("/predict", _bars("NOKEY", 0.0), {}).status_code == 401
        assert send("/predict", _bars("BADKEY", 0.0), {"X-API-Key": key + "x"}).status_code == 401
        assert send("/predict", _bars("SHORT", 0.0, n=30), by_key).status_code == 422
        assert send("/predict", {**_bars("V", 0.0), "version": "9.9"}, by_key).status_code == 404
        mixed = {"items": [_bars("OK", 3.0), _bars("BAD", 0.0, n=10)]}
        assert send("/predict/batch", mixed, by_key).status_code == 422
        fake.fail_with = PredictError(FailureKind.UNAVAILABLE, "boom")
        assert send("/predict", _bars("FAIL", 4.0), by_key).status_code >= 500
        fake.fail_with = None
    # Leaving the client ran the lifespan's stop: the writer has written everything.
    return {
        "good": good,
        "failed": failed,
        "records": query_records(audit_dir, Query()),
        "dir": audit_dir,
        # The whole key, its secret half alone, the token, the JWT signing secret.
        # (The secret half by position: it may itself hold "_", so a split on the last "_"
        # could leave two characters that any blob contains by chance.)
        "secrets": [key, key[-SECRET_LENGTH:], token, read_jwt_secret(auth.jwt_secret_path)],
        "metrics": generate_latest(state.metrics.registry).decode(),
    }


def test_every_answered_item_has_exactly_one_matching_record(run: dict[str, Any]) -> None:
    records = run["records"]
    assert len(records) == len(run["good"]) == 7
    by_item: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_item.setdefault((r["request_id"], r["symbol"]), []).append(r)
    for rid, body, answer, who in run["good"]:
        [record] = by_item[(rid, body["symbol"])]
        assert record["input_sha256"] == auditor_hash(body)
        assert record["principal"] == who
        assert record["model"] == answer["model"]
        assert record["served_by"] == "blue"
        assert record["outputs"] == {
            k: answer[k] for k in ("expected_return", "prob_up", "horizon_bars")
        }
        assert record["latency_ms"] >= 0


def test_failed_requests_leave_no_record(run: dict[str, Any]) -> None:
    assert len(run["failed"]) == 6
    assert {r["request_id"] for r in run["records"]}.isdisjoint(run["failed"])


def test_no_record_holds_a_credential(run: dict[str, Any]) -> None:
    files = [p for p in run["dir"].rglob("*") if p.is_file()]
    blobs = [
        gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in files
    ]
    assert blobs
    for n, secret in enumerate(run["secrets"]):
        raw = secret if isinstance(secret, bytes) else secret.encode()
        assert len(raw) >= 40, (n, len(raw))
        assert all(raw not in blob for blob in blobs), n


def test_the_trail_verifies_and_nothing_was_dropped(run: dict[str, Any]) -> None:
    assert [r.problems for r in verify_trail(run["dir"])] == [[]]
    assert "audit_records_dropped_total 0.0" in run["metrics"]
