"""Attacks on the request itself: body size, Serve control headers, response headers, CORS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.attack_base import AttackBase, SuiteKeys
from tests.support.live import LiveTarget


class TransportAttacks(AttackBase):
    # --- request hardening ------------------------------------------------------------------------

    def test_oversized_body_gets_413(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        limit = live_target.config.network_security.limits.max_body_bytes
        body = b'{"pad": "' + b"x" * limit + b'"}'
        headers = {
            "content-type": "application/json",
            **self._key_header(live_target, keys.predict),
        }
        response = client.post("/predict", content=body, headers=headers)
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"

    def test_oversized_chunked_body_gets_413(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        limit = live_target.config.network_security.limits.max_body_bytes

        def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
            yield b'{"pad": "'
            for _ in range(limit // 1024 + 2):
                yield b"x" * 1024
            yield b'"}'

        headers = {
            "content-type": "application/json",
            **self._key_header(live_target, keys.predict),
        }
        response = client.post("/predict", content=chunks(), headers=headers)
        assert response.status_code == 413, response.text

    def test_request_timeout_header_is_stripped(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        if live_target.echo_headers_path is None:
            pytest.skip("this server has no header echo route")
        response = client.get(
            live_target.echo_headers_path,
            headers={
                "x-request-timeout-seconds": "0",
                "x-request-disconnect-disabled": "?1",
                "x-probe": "1",
            },
        )
        assert response.status_code == 200, response.text
        seen = response.json()["headers"]
        assert "x-probe" in seen
        assert "x-request-timeout-seconds" not in seen
        assert "x-request-disconnect-disabled" not in seen

    def test_a_tiny_serve_timeout_header_changes_nothing(
        self, live_target: LiveTarget, client: httpx.Client, keys: SuiteKeys
    ) -> None:
        # Serve's ingress reads x-request-timeout-seconds before the app: a client could
        # make it answer a plain-text 408 at once. The header must not reach it.
        response = client.post(
            "/predict",
            json=live_target.valid_predict_body(),
            headers={
                "x-request-timeout-seconds": "0.000001",
                **self._key_header(live_target, keys.predict),
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")

    @pytest.mark.parametrize(
        "raw",
        [b"GET /healthz\r\n\r\n", b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n"],
        ids=["http-0.9-style", "http-2.0-as-text"],
    )
    def test_unsupported_http_versions_are_refused(
        self, live_target: LiveTarget, raw: bytes
    ) -> None:
        # uvicorn's parser hands both to the app (as HTTP/0.9 and 2.0): the app refuses them.
        status, body = live_target.raw_request(raw)
        assert status == 400, body
        assert b'"code":"unsupported_http_version"' in body.replace(b" ", b"")

    def test_security_headers_on_error_responses(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        response = self._predict(client, live_target)
        assert response.status_code == 401
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        if live_target.config.network_security.tls.enabled:
            assert response.headers["strict-transport-security"].startswith("max-age=")

    # --- CORS -------------------------------------------------------------------------------------

    def _preflight(self, client: httpx.Client, target: LiveTarget, origin: str) -> httpx.Response:
        header = target.config.security.authentication.api_key_header
        return client.options(
            "/predict",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": f"content-type,{header.lower()}",
            },
        )

    def test_cors_preflight_from_allowed_origin_is_answered(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        cors = live_target.config.network_security.cors
        if not cors.enabled or not cors.allowed_origins:
            pytest.skip("CORS is off")
        origin = cors.allowed_origins[0]
        response = self._preflight(client, live_target, origin)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == origin
        assert "POST" in response.headers["access-control-allow-methods"]

    def test_cors_preflight_from_disallowed_origin_gets_no_allow_origin(
        self, live_target: LiveTarget, client: httpx.Client
    ) -> None:
        response = self._preflight(client, live_target, "https://evil.example")
        assert response.status_code == 400, response.text
        assert "access-control-allow-origin" not in response.headers
