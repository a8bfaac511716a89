"""One replica's prediction path, top to bottom, with no HTTP in it.

``predict_rows`` is what both prediction routes call (and the no-Ray peer and the API
tests through them): resolve each item's model version -> check its window -> queue it
in the batcher (which owns features, batching and the handle call) -> wait within the
gateway's own timeout -> count each row's outcome for its version -> shape the answer.
Every failure leaves as one :class:`PredictionFailure`, counted once in the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog

from app.gateway.failures import PredictionFailure
from app.gateway.rows import RowResult
from app.gateway.schemas import PredictRequest
from app.gateway.state import GatewayState
from app.gateway.windows import DecodedItem, Window, windows_of
from model.common.errors import ModelNotFoundError, RegistryError
from model.common.failures import FailureKind
from model.common.refs import ModelRef

log = structlog.get_logger("app.gateway.predict")

Prediction = dict[str, Any]  # a ``Prediction`` JSON object, rendered by orjson as is


async def predict_rows(
    state: GatewayState,
    items: Sequence[PredictRequest] | Sequence[DecodedItem],
    *,
    priority: int,
    deadline: float | None,
    request_id: str,
    principal_id: str = "",
) -> tuple[list[Prediction], list[RowResult]]:
    """Each item's prediction in request order, and the rows behind them (for the log).
    A full answer is handed to the audit trail (``principal_id``: the caller's subject)."""
    started = time.perf_counter()
    try:
        refuse_if_stopping(state)
        shed_if_overloaded(state, priority)
    except PredictionFailure as failure:
        state.metrics.observe_failure(failure.rule.metric_status)
        raise
    state.concurrency.enter()
    queue_refused = False
    try:
        return await _predict(state, items, priority, deadline, request_id, principal_id, started)
    except PredictionFailure as failure:
        queue_refused = failure.kind is FailureKind.QUEUE_FULL  # the batcher's queue said no
        raise
    finally:
        if queue_refused:
            state.concurrency.queue_refused()
        else:
            state.concurrency.leave(time.perf_counter() - started)


async def _predict(
    state: GatewayState,
    items: Sequence[PredictRequest] | Sequence[DecodedItem],
    priority: int,
    deadline: float | None,
    request_id: str,
    principal_id: str,
    started: float,
) -> tuple[list[Prediction], list[RowResult]]:
    try:
        max_items = state.config.network_security.limits.max_batch_symbols
        if len(items) > max_items:
            raise PredictionFailure(
                FailureKind.TOO_MANY_ITEMS,
                f"at most {max_items} items per batch request, got {len(items)}",
            )
        max_bars = state.config.network_security.limits.max_bars
        refs = [resolve(state, item.model, item.version) for item in items]
        windows = windows_of(items, max_bars=max_bars)
        rows = await _run(state, refs, windows, priority, deadline, request_id)
    except PredictionFailure as failure:
        state.metrics.observe_failure(failure.rule.metric_status)
        raise
    preds = [_render(w, row) for w, row in zip(windows, rows, strict=True)]
    if state.audit is not None:
        green = state.rollout.routing.green if state.rollout and state.rollout.routing else None
        latency_s = time.perf_counter() - started
        # A queue put wakes the writer thread, which takes the GIL as soon as the loop
        # lets go of it (the TLS write does): made once this loop turns, after the answer
        # has been encrypted and written, so the answer never waits for the writer.
        asyncio.get_running_loop().call_soon(
            state.audit.submit, request_id, principal_id, windows, preds, latency_s, green
        )
    if state.shadow is not None:  # a sample of blue's rows, scored on green off this path
        state.shadow.offer(rows)
    return preds, rows


STOPPING_MESSAGE = "this gateway replica is stopping; retry (a new connection)"


def refuse_if_stopping(state: GatewayState) -> None:
    """503 + Retry-After for a new prediction once the replica drains (``state.stopping``)."""
    if state.stopping:
        raise PredictionFailure(FailureKind.UNAVAILABLE, STOPPING_MESSAGE, retry_after_s=1)


def shed_if_overloaded(state: GatewayState, priority: int | None) -> None:
    """429 when the gateway's own event loop is behind (:mod:`app.gateway.loop_lag`) or
    its predictions in flight are at their limit (:mod:`app.gateway.concurrency`).

    ``priority`` None: before the caller is known, so only past the budget of every
    priority; the prediction fast path asks so before authentication and parsing, which
    makes a refusal the cheapest answer the gateway gives. Raises
    ``PredictionFailure(queue_full)``; ``predict_rows`` counts it in the metrics, the
    fast path counts its own."""
    retry_after = state.loop_lag.refusal(priority)
    if retry_after is None:
        retry_after = state.concurrency.refusal(priority)
    if retry_after is not None:
        raise PredictionFailure(
            FailureKind.QUEUE_FULL,
            "the gateway is overloaded; retry later",
            retry_after_s=retry_after,
        )


def resolve(state: GatewayState, model: str | None, version: str | None) -> ModelRef:
    """The version an item is served by: blue/green's pick unless it names one."""
    in_service = state.readiness.model
    if in_service is None:
        raise PredictionFailure(FailureKind.NOT_READY)
    if version is None and model in (None, in_service.name):
        return state.rollout.pick(in_service) if state.rollout is not None else in_service
    name = model or in_service.name
    try:
        return state.registry.resolve(name, version)
    except (ModelNotFoundError, ValueError):
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        raise PredictionFailure(
            FailureKind.MODEL_NOT_FOUND, f"{what} is not in the registry"
        ) from None
    except RegistryError:
        # There, but unreadable (a manifest that is not one, a DEFAULT naming no version):
        # the registry's fault, not the client's, and its paths stay in the server's log.
        log.warning("registry_unreadable", model=name, version=version, exc_info=True)
        raise PredictionFailure(FailureKind.INVALID_MODEL) from None


async def _run(
    state: GatewayState,
    refs: list[ModelRef],
    windows: list[Window],
    priority: int,
    deadline: float | None,
    request_id: str,
) -> list[RowResult]:
    futures: list[asyncio.Future[RowResult]] = []
    timed_out = False
    try:
        futures = state.batcher.submit_all(
            refs, windows, request_id=request_id, priority=priority, deadline=deadline
        )
        # asyncio.timeout rather than wait_for: no extra task per request on the hot path.
        async with asyncio.timeout(state.config.serving.request_timeout_s):
            if len(futures) == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
    except TimeoutError:
        timed_out = True
        raise PredictionFailure(FailureKind.TIMEOUT) from None
    finally:
        for future in futures:
            future.cancel()  # rows not answered yet leave the queue (a no-op when done)
        _count_outcomes(state, refs, futures, timed_out=timed_out)


def _count_outcomes(
    state: GatewayState,
    refs: list[ModelRef],
    futures: list[asyncio.Future[RowResult]],
    *,
    timed_out: bool,
) -> None:
    """Each row's outcome for its version (green's error rate in a rollout). A row with
    no answer counts against its version only when the gateway's timeout cut it off,
    not when another row failed first or the client went away."""
    if state.rollout is None:
        return
    for ref, future in zip(refs, futures, strict=False):
        if future.cancelled():
            if timed_out:
                state.rollout.record(ref, ok=False)
            continue
        failure = future.exception()
        if failure is None:
            state.rollout.record(ref, ok=True)
        elif not isinstance(failure, PredictionFailure) or failure.rule.counts_against_version:
            state.rollout.record(ref, ok=False)


def _render(window: Window, row: RowResult) -> Prediction:
    return {
        "symbol": window.symbol,
        "expected_return": row.expected_return,
        "prob_up": min(1.0, max(0.0, row.prob_up)),
        "horizon_bars": row.horizon_bars,
        "as_of": window.as_of,
        "model": row.ref.to_json(),
    }
