"""``build_app(args)``: the Serve import path (``app.serve.build:build_app``).

``serve run deploy/serve.yaml``, ``serve deploy`` against a cluster, KubeRay's
``serveConfigV2`` and ``cnnlstm serve`` all come through here, so the application graph is
defined once: gateway (ingress) -> predictor (batched model), both talking to the rollout
controller (blue/green routing and registry sync, ``app.control.rollout_controller``).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from ray.serve import Application, Deployment

from app.config import ServiceConfig
from app.config.env import Settings, load_service_config
from app.control.rollout_controller import RolloutController, controller_options
from app.observability.logging import configure_replica_logging
from app.observability.replica_metrics import predictor_replica_metrics
from app.serve.ingress import Gateway
from app.serve.options import gateway_options, predictor_options
from app.serve.predictor_settings import predictor_settings
from model.deployment import PredictorDeployment


def build_from_config(config: ServiceConfig, settings: Settings) -> Application:
    """gateway -> predictor, both also talking to the rollout controller (blue/green and
    registry sync; the controller finds the predictor by name, see its module)."""
    config_json = config.model_dump(mode="json")
    controller = (
        cast(Deployment, RolloutController).options(**controller_options(config)).bind(config_json)
    )
    predictor = (
        cast(Deployment, PredictorDeployment)
        .options(**predictor_options(config, settings.DEVICE))
        .bind(
            predictor_settings(config, settings),
            controller,
            # model/ never imports app/: the predictor gets its logging and metrics set-up
            # handed in.
            functools.partial(configure_replica_logging, config.logging.model_dump(mode="json")),
            functools.partial(
                predictor_replica_metrics,
                config.metrics.model_dump(mode="json"),
                settings.DEVICE == "gpu",
            ),
        )
    )
    return (
        cast(Deployment, Gateway)
        .options(**gateway_options(config))
        .bind(predictor, config_json, controller)
    )


def build_app(args: dict[str, Any]) -> Application:
    settings, config = load_service_config(args.get("config_path"))
    return build_from_config(config, settings)
