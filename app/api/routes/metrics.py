"""``GET /metrics``: the gateway's Prometheus registry in the text exposition format.

Authentication is attached where the router is included (``security.authentication.
metrics_auth``), so this route stays the same whether Prometheus scrapes it openly or
with a bearer token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=(
        "This gateway process's metrics in the Prometheus text format (version 0.0.4). "
        "With more than one gateway replica, scrape Ray's per-node exporter instead "
        "(see deploy/METRICS.md)."
    ),
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
    include_in_schema=True,
)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(content=generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
