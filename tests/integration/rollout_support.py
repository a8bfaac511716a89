"""Background traffic and controller helpers for the rollout integration tests."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from app.cli.serve_cmd import sample_request
from tests.integration.conftest import ServeStack
from tests.support.live import LiveTarget

FINISHED = ("promoted", "rolled_back", "aborted")


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    status: int
    version: str | None  # the model version that answered (200s)
    code: str | None  # the error code (non-200s)


@dataclass
class Traffic:
    """``workers`` clients, each sending /predict (no version named) back to back until
    stopped, recording every answer. The no-drop checks read ``answers``."""

    stack: ServeStack
    key: str
    workers: int = 4
    base_url: str | None = None
    path: str = "/predict"
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        ctx = ssl.create_default_context(cafile=str(self.stack.ca_file))
        base = self.base_url or self.stack.base_url
        with httpx.Client(base_url=base, verify=ctx, timeout=30.0) as client:
            i = 0
            while not self._stop.is_set():
                body = sample_request(f"RB{worker}", offset=100 + (37 * i + worker) % 4000)
                i += 1
                try:
                    r = client.post(self.path, json=body, headers={"X-API-Key": self.key})
                except httpx.HTTPError as exc:  # a dropped connection is a dropped request
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                data = r.json()
                answer = Answer(
                    at=time.monotonic(),
                    status=r.status_code,
                    version=data["model"]["version"] if r.status_code == 200 else None,
                    code=None if r.status_code == 200 else data["error"]["code"],
                )
                with self._lock:
                    self.answers.append(answer)

    def __enter__(self) -> Traffic:
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def wait_for(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answers) < n:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.05)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def controller() -> Any:
    from ray import serve

    return serve.get_deployment_handle("rollout_controller", app_name="cnnlstm")


def predictor() -> Any:
    from ray import serve

    return serve.get_deployment_handle("cnn_lstm_predictor", app_name="cnnlstm")


def status() -> dict[str, Any]:
    result: dict[str, Any] = controller().status.remote().result(timeout_s=30)
    return result


def wait_status(
    predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 90.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    current = status()
    while not predicate(current):
        assert time.monotonic() < deadline, f"controller never got there: {current}"
        time.sleep(0.2)
        current = status()
    return current


def injected_fault_rows() -> int:
    """Rows the predictor failed on purpose so far (the stack runs one predictor replica)."""
    st = predictor().status.remote().result(timeout_s=30)
    return int(st.extra["injected_fault_rows"])


def restore_first_version(stack: ServeStack, target: LiveTarget) -> None:
    """Put the session's first version back in service (a module's teardown), so later
    modules see the stack as the session fixture built it."""
    from model.common.registry import ModelRegistry

    if status()["phase"] in ("preparing", "shadowing", "shifting"):
        controller().abort.remote("test teardown").result(timeout_s=30)
    ModelRegistry(stack.registry_root).set_default(stack.ref.name, stack.ref.version)
    wait_status(lambda s: s["blue"]["version"] == stack.ref.version, timeout_s=120)
    token = target.mint(["model:stats"], ttl_s=600)
    deadline = time.monotonic() + 60
    with stack.client() as client:
        while True:
            stats = client.get("/stats", headers={"Authorization": f"Bearer {token}"}).json()
            served = (stats["model"]["version"], stats["rollout"]["blue"]["version"])
            if served == (stack.ref.version,) * 2:
                return
            assert time.monotonic() < deadline, stats
            time.sleep(0.5)
