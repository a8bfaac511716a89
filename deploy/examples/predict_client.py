"""An example client for ``POST /predict`` that does what an integrator's client should.

* **TLS verified** against a CA file (``--ca-file``; the system trust store without it).
* **The API key** from a file (``--api-key-file``) or the ``CNNLSTM_API_KEY`` environment
  variable, never from the command line (where ``ps`` and shell history would show it).
* **One deadline** for the whole call: sent as ``X-Request-Deadline-Ms`` (Unix epoch ms,
  so the gateway drops the request if it is still queued then) and enforced here too, on
  every attempt's timeouts and on every wait between attempts.
* **Retries that honour ``Retry-After``**: a 429 or 503 that carries it (rate limited,
  queue full, model not ready, predictor unavailable) is retried after that many seconds,
  at most ``--max-attempts`` times and never past the deadline. A 503 without it (deadline
  passed, predictor timeout, invalid model) and every other error are final. A refused
  connection is retried with a short backoff (a gateway restarting during a rollout).
* **One request id** (``X-Request-ID``, the client's own) on every attempt, so the
  gateway's access lines for all the tries of one call tie together.

Only ``httpx``. Run it against the demo (``cnnlstm serve --demo`` writes these files)::

    CNNLSTM_API_KEY="$(cat .local/secrets/demo-api-key)" \\
    python deploy/examples/predict_client.py --url https://127.0.0.1:8000 \\
        --ca-file certs-dev/out/ca.crt --body .local/sample-request.json --deadline-ms 2000

or pass ``--api-key-file .local/secrets/demo-api-key`` instead of the variable.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

API_KEY_ENV = "CNNLSTM_API_KEY"
RETRYABLE_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 30.0  # a longer wait than this is the caller's decision, not ours


class PredictError(Exception):
    """The call failed: the last answer's status and error code, or why none came."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, request_id: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id


def load_api_key(path: str | Path | None = None, env: Mapping[str, str] = os.environ) -> str:
    """The key from ``path`` if given, else from ``$CNNLSTM_API_KEY``."""
    key = Path(path).read_text(encoding="utf-8").strip() if path else env.get(API_KEY_ENV, "")
    if not key.strip():
        raise SystemExit(f"no API key: pass --api-key-file or set {API_KEY_ENV}")
    return key.strip()


def parse_retry_after(value: str | None, now: float) -> float | None:
    """RFC 9110 ``Retry-After``: delay-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


@dataclass
class PredictClient:
    base_url: str
    api_key: str
    ca_file: str | Path | None = None
    max_attempts: int = 4
    connect_timeout_s: float = 2.0
    # For tests and embedding: another transport (e.g. httpx.ASGITransport), a fake clock.
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    _client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
        self._client = httpx.Client(base_url=self.base_url, verify=verify, transport=self.transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PredictClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def predict(
        self,
        bars: Mapping[str, Any],
        *,
        deadline_ms: int = 2000,
        request_id: str | None = None,
        path: str = "/predict",
    ) -> dict[str, Any]:
        """POST ``bars`` to ``path``; the parsed answer, or :class:`PredictError`."""
        rid = request_id or uuid.uuid4().hex
        deadline = self.clock() + deadline_ms / 1000.0
        headers = {
            "X-API-Key": self.api_key,
            "X-Request-ID": rid,
            "X-Request-Deadline-Ms": str(int(deadline * 1000)),
        }
        body = json.dumps(bars).encode()
        for attempt in range(1, self.max_attempts + 1):
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise PredictError("deadline passed before an answer", request_id=rid)
            timeout = httpx.Timeout(remaining, connect=min(self.connect_timeout_s, remaining))
            try:
                response = self._client.post(
                    path,
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                    timeout=timeout,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                wait = min(0.1 * 2**attempt, 2.0)
                if (
                    _tls_refused(exc)
                    or attempt == self.max_attempts
                    or self.clock() + wait >= deadline
                ):
                    raise PredictError(f"could not connect: {exc}", request_id=rid) from exc
                self.sleep(wait)
                continue
            except httpx.TimeoutException:
                raise PredictError(
                    "deadline passed waiting for the answer", request_id=rid
                ) from None
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
            wait = self._retry_wait(response, attempt, deadline)
            if wait is None:
                raise _error_from(response, rid)
            self.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry_wait(self, response: httpx.Response, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before the next attempt, or None if this answer is final."""
        if response.status_code not in RETRYABLE_STATUSES or attempt >= self.max_attempts:
            return None
        now = self.clock()
        wait = parse_retry_after(response.headers.get("Retry-After"), now)
        if wait is None or wait > MAX_RETRY_AFTER_S or now + wait >= deadline:
            return None  # not retryable, or the answer would come too late anyway
        return wait


def _tls_refused(exc: BaseException) -> bool:
    """A certificate (or other TLS) failure somewhere in the chain: retrying cannot help."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _error_from(response: httpx.Response, rid: str) -> PredictError:
    """The shared error shape ``{"error": {"code", "message", ...}}`` as an exception."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = None, response.text[:200]
    return PredictError(
        f"HTTP {response.status_code} {code}: {message}",
        status=response.status_code,
        code=code,
        request_id=rid,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="https://127.0.0.1:8000")
    parser.add_argument(
        "--ca-file", help="CA that signed the gateway's certificate (default: the system's CAs)"
    )
    parser.add_argument("--api-key-file", help=f"file holding the API key (else ${API_KEY_ENV})")
    parser.add_argument("--body", required=True, help="JSON file: one /predict request body")
    parser.add_argument("--deadline-ms", type=int, default=2000, help="budget for the whole call")
    parser.add_argument("--max-attempts", type=int, default=4)
    parser.add_argument("--request-id", help="default: a fresh uuid4")
    args = parser.parse_args(argv)
    api_key = load_api_key(args.api_key_file)
    bars = json.loads(Path(args.body).read_text(encoding="utf-8"))
    client = PredictClient(args.url, api_key, args.ca_file, args.max_attempts)
    with client:
        try:
            answer = client.predict(bars, deadline_ms=args.deadline_ms, request_id=args.request_id)
        except PredictError as exc:
            print(f"error (request id {exc.request_id}): {exc}", file=sys.stderr)
            return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
