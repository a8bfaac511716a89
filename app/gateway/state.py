"""What a gateway replica holds between requests, kept on ``app.state.gateway``.

(State yielded from a lifespan does not reach ``request.state`` under Serve, ray#45395,
so it lives on the app object.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from app.audit import audit_root
from app.audit.writer import AuditTrail
from app.config import ServiceConfig
from app.gateway.batcher import Batcher, Dispatch
from app.gateway.cluster import ClusterView, StaticCluster
from app.gateway.concurrency import ConcurrencyLimit
from app.gateway.failures import PredictionFailure
from app.gateway.feature_cache import FeatureCache
from app.gateway.keep_warm import KeepWarm
from app.gateway.loop_lag import LoopLag
from app.gateway.predictor_socket import PredictorSockets
from app.gateway.readiness import Readiness
from app.gateway.rollout_router import FetchRouting, PushCounts, PushShadow, RolloutRouter
from app.gateway.serving_view import current_profile, keep_gauges_current
from app.gateway.shadow import ShadowScorer
from app.observability.metrics import GatewayMetrics
from app.observability.process_metrics import new_registry
from model.common.failures import FailureKind
from model.common.features import warm_up as warm_up_features
from model.common.protocol import PredictorStatus, Routing
from model.common.registry import ModelRegistry
from model.common.tasks import cancel_and_wait

log = structlog.get_logger("app.gateway.state")


@dataclass
class GatewayState:
    config: ServiceConfig
    registry: ModelRegistry
    batcher: Batcher
    features: FeatureCache
    metrics: GatewayMetrics
    readiness: Readiness
    cluster: ClusterView = field(default_factory=StaticCluster)
    started_at: float = field(default_factory=time.time)
    extra_stats: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # Blue/green routing (app.gateway.rollout_router); None: every request goes to the
    # predictor's own default (the API tests, the no-Ray benchmark baseline).
    rollout: RolloutRouter | None = None
    # The prediction audit trail (app.audit); None when it is off or has no directory.
    audit: AuditTrail | None = None
    # Green scored beside blue during a rollout (app.gateway.shadow); None without a router.
    shadow: ShadowScorer | None = None
    # How late the event loop runs: new predictions are shed while it is too late.
    loop_lag: LoopLag = field(default_factory=lambda: LoopLag(0.0))
    # How many predictions may be in the gateway at once (adapts to their latency).
    concurrency: ConcurrencyLimit = field(default_factory=lambda: ConcurrencyLimit(0.0))
    # Set when the replica stops (after Serve's minimum draining period): new predictions
    # get 503 + Retry-After + Connection: close, so keep-alive clients stop reusing this
    # replica and the drain ends as soon as the requests already taken are answered.
    stopping: bool = False
    # The predictor replicas' sockets on this node (app.gateway.predictor_socket), when
    # the Serve gateway uses them; the batcher's dispatch goes through them then.
    predictor_sockets: PredictorSockets | None = None
    # Warm rows through an idle path (batching.keep_warm_ms); None: off.
    keep_warm: KeepWarm | None = None
    _gauges: asyncio.Task[None] | None = None

    def begin_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("gateway_stopping", queued=self.batcher.depth)

    async def start(self) -> None:
        if self.audit is not None:
            await asyncio.to_thread(self.audit.start)  # claims and repairs its files
        if self.predictor_sockets is not None:
            # Connected before the batcher starts; the background scan starts after, so
            # the two never connect to one socket twice.
            await self.predictor_sockets.scan()
            self.predictor_sockets.start()
        self.batcher.start()
        self.loop_lag.start()
        self.readiness.start()
        # Serve routes traffic here once this returns: the market calendar's table is
        # built first (a failure is logged by the gauges' loop, which tries again).
        with contextlib.suppress(Exception):
            await asyncio.to_thread(current_profile, self.config)
        self._gauges = asyncio.get_running_loop().create_task(
            keep_gauges_current(
                self.config, self.metrics, self.cluster, on_replicas=self._size_batches_in_flight
            )
        )
        if self.rollout is not None:
            self.rollout.start()
            await self.rollout.refresh()
        await self.readiness.refresh()
        if self.keep_warm is not None:
            self.keep_warm.start()

    def _size_batches_in_flight(self, counts: dict[str, int]) -> None:
        # Per predictor replica; a count of 0 (all restarting) keeps one replica's worth.
        replicas = max(1, counts.get(self.config.deployment.deployment_name, 1))
        self.batcher.set_max_in_flight(
            self.config.batching.batches_in_flight_per_replica * replicas
        )

    async def stop(self) -> None:
        if self.keep_warm is not None:
            await self.keep_warm.stop()
        await cancel_and_wait(self._gauges)
        await self.readiness.stop()
        await self.loop_lag.stop()
        await self.batcher.stop()
        if self.shadow is not None:
            await self.shadow.stop()
        if self.predictor_sockets is not None:
            await self.predictor_sockets.stop()
        if self.rollout is not None:
            await self.rollout.stop()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.stop)  # writes what is queued


def build_gateway_state(
    config: ServiceConfig,
    *,
    dispatch: Dispatch,
    probe: Callable[[], Awaitable[PredictorStatus]],
    cluster: ClusterView,
    rollout: tuple[FetchRouting, PushCounts] | None = None,
    push_shadow: PushShadow | None = None,
) -> GatewayState:
    """The one wiring of a gateway's parts, shared by the Serve gateway and the no-Ray
    benchmark baseline (so the two measure the same code). ``rollout``: how to reach the
    rollout controller (fetch the routing, push outcome counts), when there is one;
    ``push_shadow``: how to report shadow comparisons to it."""
    warm_up_features()  # compiled here, not on the first request (model.common.features_kernel)
    metrics = GatewayMetrics(new_registry(), config.metrics)
    batching = config.batching
    feature_cfg = config.caching.feature_cache
    features = FeatureCache(
        ttl_seconds=feature_cfg.ttl_seconds,
        max_entries=feature_cfg.max_entries,
        enabled=feature_cfg.enabled,
    )
    batcher = Batcher(
        dispatch,
        max_batch_size=batching.max_batch_size,
        batch_wait_timeout_s=batching.batch_wait_timeout_s if batching.enabled else 0.0,
        capacity=batching.priority_queue_size,
        max_queue_wait_s=batching.max_queue_wait_ms / 1000.0,
        idle_hold_s=batching.idle_hold_ms / 1000.0,
        retry_timeout_s=config.serving.predictor_call_timeout_s,
        features=features,
        metrics=metrics,
        max_in_flight=batching.batches_in_flight_per_replica,  # one replica until counted
    )
    router = _rollout_router(config, metrics, rollout, push_shadow) if rollout else None
    readiness = Readiness(
        _publishing(probe, metrics),
        timeout_s=max(0.5, config.readiness_probe.timeout_s - 1.0),
        period_s=min(5.0, config.readiness_probe.period_s),
    )

    # A predictor that stops answering: the rows waiting on it get 503 + Retry-After now
    # (not after their call's timeout) and new ones are refused at once until its status
    # answers again (a replacement replica loaded and warm).
    def release_rows() -> None:
        batcher.abandon(PredictionFailure(FailureKind.UNAVAILABLE))

    batcher.on_predictor_lost = lambda: readiness.mark_unreachable("no replica answered")
    readiness.on_lost = release_rows
    state = GatewayState(
        config=config,
        registry=ModelRegistry(config.model_registry.path),
        batcher=batcher,
        features=features,
        metrics=metrics,
        readiness=readiness,
        cluster=cluster,
        rollout=router,
        audit=_audit_trail(config, metrics),
        shadow=_shadow_scorer(config, metrics, dispatch, batcher, router),
        loop_lag=LoopLag(batching.max_loop_lag_ms / 1000.0),
        # Never fewer than a full batch in flight: below that, batches shrink and the
        # gateway answers fewer, not faster (measured: goodput fell to 70/s at a limit of 8).
        concurrency=ConcurrencyLimit(
            batching.max_in_flight_mean_ms / 1000.0, min_limit=batching.max_batch_size
        ),
    )
    if batching.keep_warm_ms > 0:
        state.keep_warm = KeepWarm(
            batcher,
            interval_s=batching.keep_warm_ms / 1000.0,
            for_s=batching.keep_warm_for_s,
            # Blue: a warm row never goes to green, whose share is the rollout's to set.
            in_service=lambda: readiness.model,
            busy=lambda: state.stopping or state.concurrency.in_flight > 0,
        )
        state.extra_stats["keep_warm"] = state.keep_warm.view
    return state


def _shadow_scorer(
    config: ServiceConfig,
    metrics: GatewayMetrics,
    dispatch: Dispatch,
    batcher: Batcher,
    router: RolloutRouter | None,
) -> ShadowScorer | None:
    if router is None:
        return None
    scorer = ShadowScorer(
        dispatch,
        lambda: router.routing,
        busy=lambda: batcher.depth > 0,
        metrics=metrics.shadow,
        max_batch_size=config.batching.max_batch_size,
        capacity=config.blue_green_deployment.shadow.queue_rows,
        timeout_s=config.serving.request_timeout_s,
    )
    router.shadow_source = scorer.take
    return scorer


def _audit_trail(config: ServiceConfig, metrics: GatewayMetrics) -> AuditTrail | None:
    root = audit_root(config)
    if root is None:
        if config.audit.enabled:
            log.warning("audit_trail_off", reason="neither audit.path nor logging.directory set")
        return None
    return AuditTrail(root, config.audit, on_drop=metrics.audit_records_dropped.inc)


def _rollout_router(
    config: ServiceConfig,
    metrics: GatewayMetrics,
    calls: tuple[FetchRouting, PushCounts],
    push_shadow: PushShadow | None,
) -> RolloutRouter:
    bg = config.blue_green_deployment

    def publish(routing: Routing) -> None:
        metrics.set_rollout(routing.phase, routing.green_weight_pct)
        serving = [r for r in (routing.blue, routing.green) if r is not None]
        metrics.set_models([(r.name, r.version, r.sha256) for r in serving])

    fetch, push = calls
    return RolloutRouter(
        fetch,
        push,
        poll_s=bg.gateway_poll_interval_s,
        report_s=bg.report_interval_s,
        # Thirty missed polls (15 s by default) before green stops getting traffic.
        stale_after_s=max(5.0, 30 * bg.gateway_poll_interval_s),
        on_change=publish,
        push_shadow=push_shadow,
    )


def _publishing(
    probe: Callable[[], Awaitable[PredictorStatus]], metrics: GatewayMetrics
) -> Callable[[], Awaitable[PredictorStatus]]:
    """The readiness probe, also publishing what the predictor reports (its numerics)."""

    async def probe_and_publish() -> PredictorStatus:
        status = await probe()
        metrics.predictor.update(status)
        return status

    return probe_and_publish
