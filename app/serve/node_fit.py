"""How many predictor replicas one node holds, and a config that asks for no more.

A local Ray (``cnnlstm serve``, ``cnnlstm bench``) is one node that never grows. A
predictor replica the autoscaler asks for beyond what that node offers waits for room
forever, and while it waits the raylet asks every worker of the node to ``gc.collect()``
(BENCHMARKS.md, session 14): on the laptop profile (gateway 0.25 CPU, predictor 1 CPU,
up to 2 predictors) a 2-core machine holds one predictor, not two. So, on a local Ray only,
the autoscaling maxima are capped at what the node holds. A cluster can add nodes (the
KubeRay autoscaler does), so its config is left as written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from app.config import ServiceConfig
from app.config.env import Settings
from app.serve.options import gateway_options, predictor_actor_options, predictor_options

PROFILES = ("autoscaling", "market_hours_autoscaling", "off_hours_autoscaling")


def actor_ask(actor_options: Mapping[str, Any]) -> dict[str, float]:
    """Ray's resource names and amounts for one replica's ``ray_actor_options``."""
    ask = {
        "CPU": float(actor_options.get("num_cpus") or 0),
        "GPU": float(actor_options.get("num_gpus") or 0),
        "memory": float(actor_options.get("memory") or 0),
        **{name: float(n) for name, n in (actor_options.get("resources") or {}).items()},
    }
    return {name: amount for name, amount in ask.items() if amount > 0}


def gateways_ask(config: ServiceConfig) -> dict[str, float]:
    """What all the gateway replicas together ask of Ray."""
    gateway = gateway_options(config)
    return {
        name: amount * int(gateway["num_replicas"])
        for name, amount in actor_ask(gateway["ray_actor_options"]).items()
    }


def required_cpus(config: ServiceConfig) -> float:
    """Logical CPUs the app asks Ray for at its minimum size (a local Ray needs them)."""
    pred = predictor_options(config, "cpu")
    auto = pred.get("autoscaling_config") or {}
    replicas = max(1, int(auto.get("min_replicas") or pred.get("num_replicas", 1)))
    per_replica = actor_ask(pred["ray_actor_options"]).get("CPU", 0.0)
    return replicas * per_replica + gateways_ask(config).get("CPU", 0.0)


def replicas_that_fit(
    each: Mapping[str, float], beside: Mapping[str, float], offered: Mapping[str, float]
) -> int | None:
    """Replicas asking ``each`` that fit in ``offered`` once ``beside`` is placed: at
    least one (the local Ray is sized for the minimum); None when ``each`` asks nothing."""
    room = [
        (offered.get(name, 0.0) - beside.get(name, 0.0)) / amount
        for name, amount in each.items()
        if amount > 0
    ]
    if not room:
        return None
    return max(1, math.floor(min(room) + 1e-9))


def fit_to_node(
    config: ServiceConfig, settings: Settings, offered: Mapping[str, float]
) -> tuple[ServiceConfig, str | None]:
    """``config`` with every autoscaling maximum capped at the predictor replicas this
    node holds beside the gateways, and a line saying so (None when nothing changed)."""
    if not config.serving.autoscaling_enabled:
        return config, None
    each = actor_ask(predictor_actor_options(config, settings.DEVICE))
    beside = gateways_ask(config)
    fit = replicas_that_fit(each, beside, offered)
    asked = max(getattr(config, p).max_replicas for p in PROFILES)
    if fit is None or asked <= fit:
        return config, None
    update = {
        p: getattr(config, p).model_copy(
            update={
                "max_replicas": min(getattr(config, p).max_replicas, fit),
                "min_replicas": min(getattr(config, p).min_replicas, fit),
            }
        )
        for p in PROFILES
    }
    cpus = offered.get("CPU", 0.0)
    return config.model_copy(update=update), (
        f"predictor replicas capped at {fit} (the config allows {asked}): this one-node Ray "
        f"offers {cpus:g} CPUs, the gateway takes {beside.get('CPU', 0.0):g} and each "
        f"predictor {each.get('CPU', 0.0):g}"
    )
