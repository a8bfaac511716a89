"""Composition root: ``create_app`` wires middleware, routers and handlers; nothing else.

It knows nothing about Ray: the Serve gateway (:mod:`app.serve.ingress`) and the API tests build
a :class:`GatewayState` (real handle or fake predictor) and hand it in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from app.api.body import document_raw_bodies
from app.api.docs import install_docs
from app.api.errors import FastJSONResponse, register_exception_handlers
from app.api.fast_predict import FastPredict
from app.api.openapi import document_errors
from app.api.routes import health, metrics, predict, stats, token
from app.config import ServiceConfig
from app.gateway.schemas import BatchPredictRequest, PredictRequest
from app.gateway.state import GatewayState
from app.observability.access_log import install_access_log, wrap_middleware_stack
from app.observability.http_metrics import instrument_http
from app.observability.refusal_lines import RefusalLines
from app.security.dependencies import metrics_access
from app.security.hardening import api_security_headers, install_security

log = structlog.get_logger("app.api.app")

API_DESCRIPTION = """
CNN+LSTM price model behind a secured gateway.

* `POST /predict` and `POST /predict/batch` — scope `model:predict` (`X-API-Key` or JWT)
* `GET /stats` — scope `model:stats` (JWT or API key)
* `POST /token` — OAuth2 client-credentials grant for short-lived JWTs
* `GET /healthz`, `GET /ready` — probes (open); `GET /metrics` — Prometheus text

Every error has one shape: `{"error": {"code", "message", "request_id", "details"}}`;
`code` is one of the `ErrorCode` enumeration. `Retry-After` on a 429 or 503 says when to retry.
"""


def create_app(
    config: ServiceConfig,
    state: GatewayState,
    *,
    metrics_registry: CollectorRegistry,
    behind_serve_proxy: bool = False,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.security.warn_if_disabled(log)
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    docs_enabled = config.serving.docs_enabled
    app = FastAPI(
        title="CNN+LSTM prediction service",
        version=config.deployment.version,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        # The docs pages are the gateway's own (app.api.docs: no CDN); off, no schema either.
        openapi_url="/openapi.json" if docs_enabled else None,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.gateway = state
    app.state.metrics_registry = metrics_registry
    register_exception_handlers(app)
    security = install_security(app, config)
    http_metrics = instrument_http(app, metrics_registry)
    # Outside everything, error handling included: every response (413s from the size
    # limit and unhandled 500s too) gets a request id and exactly one access line.
    install_access_log(app, config.logging, set_header=not behind_serve_proxy)
    if config.serving.gateway.fast_path:
        # Outermost: the prediction routes' common case, without the stack above.
        fast = FastPredict(
            app.router,  # replaced by the built stack below
            state=state,
            security=security,
            http_metrics=http_metrics,
            response_headers=api_security_headers(config),
            max_body_bytes=config.network_security.limits.max_body_bytes,
            access_log=config.logging.enable_access_logs,
            refusal_lines=(
                RefusalLines(config.logging.refusal_lines_per_s)
                if config.logging.enable_access_logs
                else None  # no access lines at all: no counts of the ones left out either
            ),
            set_request_id_header=not behind_serve_proxy,
        )
        app.state.fast_predict = fast  # the Serve gateway's edge guard asks it first

        def around(stack: ASGIApp) -> ASGIApp:
            fast.app = stack
            return fast

        wrap_middleware_stack(app, around)

    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(stats.router)
    app.include_router(token.router)
    app.include_router(metrics.router, dependencies=[Depends(metrics_access)])
    # The prediction routes read their bodies raw (app.api.body): document them here.
    document_raw_bodies(app, [PredictRequest, BatchPredictRequest])
    # Every route's errors in the one shape, the ErrorCode enumeration, success examples.
    document_errors(app)
    if docs_enabled:
        install_docs(app)
    return app
