"""The ``serving`` section (not in the spec): how the gateway and predictor are deployed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app.config.base import Section

# serving.predictor_engine: a named engine, or a split pinned by name (model.engine).
ENGINE_SETTING_PATTERN = r"^(auto|torch|onnxruntime|onnxruntime<=[1-9][0-9]{0,3}\+torch)$"

# Ray's built-in resources: a custom resource must not shadow one of them.
_RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


def check_ray_resources(resources: dict[str, float], where: str) -> dict[str, float]:
    """Custom Ray resources (``ray_actor_options["resources"]``): names, positive amounts."""
    for name, amount in resources.items():
        if not name or name in _RAY_BUILTIN_RESOURCES or name.startswith("node:"):
            raise ValueError(f"{where}: {name!r} is not a custom Ray resource name")
        if not amount > 0:
            raise ValueError(f"{where}: {name!r} needs an amount > 0, got {amount!r}")
    return resources


class GatewayDeployment(Section):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(1000, ge=1)
    # Serve's own check of each gateway replica: how fast a crashed gateway is noticed and
    # replaced (a restart follows at once). The spec's liveness probe (30 s) is the
    # orchestrator's probe of /healthz; this one is an actor call, cheap enough every 2 s.
    health_check_period_s: float = Field(2.0, gt=0, le=600)
    # Ray custom resources each gateway replica asks for (ray_actor_options["resources"]):
    # pins gateways to the nodes offering them, e.g. {cnnlstm_gateway: 1} with the KubeRay
    # gateway pods (and compose's head) offering cnnlstm_gateway. Empty: no pin.
    ray_resources: dict[str, float] = Field(default_factory=dict)
    # POST /predict and /predict/batch answered by one plain ASGI function ahead of the
    # framework's middleware stack (app/api/fast_predict.py: same checks, same answers, about
    # half the CPU per request). False sends them through FastAPI like every other route.
    fast_path: bool = True
    # In the Serve gateway, the fast path also answers ahead of Serve's own per-request
    # handler (app/serve/serve_patches.py, 4.: the replica's ongoing count and Serve's
    # request metrics kept). False: every request goes through Serve's handler first.
    answer_at_edge: bool = True

    @model_validator(mode="after")
    def _custom_resources(self) -> GatewayDeployment:
        check_ray_resources(self.ray_resources, "serving.gateway.ray_resources")
        return self


class Serving(Section):
    """Which resources the predictor takes, and how the gateway is sized."""

    resource_tier: Literal["small", "medium", "large"] | None = None
    autoscaling_enabled: bool = True
    gateway: GatewayDeployment = GatewayDeployment()
    predictor_max_ongoing_requests: int | None = None  # None: derived from batch size
    # Ray custom resources each predictor replica asks for, as for the gateway above.
    predictor_ray_resources: dict[str, float] = Field(default_factory=dict)
    # The predictor's @serve.batch wait; None: batching.batch_wait_timeout_s (spec 4.1).
    # Calls already carry gateway batches (formed with batching.batch_wait_timeout_s), so
    # the predictor does not wait again: calls that arrive while a forward runs are merged
    # into the next one anyway. Waiting here would add the whole timeout to every lone
    # batch's latency (see BENCHMARKS.md).
    predictor_batch_wait_s: float | None = Field(0.0, ge=0, le=10)
    # The predictor's numerics (model/numerics.py): "auto" runs bf16 autocast on a CPU with
    # native bf16 (AVX512-BF16 or AMX) once the artifact's golden sample agrees under it, and
    # fp32 otherwise (on GPUs too: bf16 was slower there at these sizes). "fp32" and "bf16"
    # force a choice; a bf16 whose golden check fails still falls back to fp32. "int8"
    # (model/int8.py, never chosen by "auto") runs every forward on ONNX Runtime with int8
    # weights: 1.3-2x faster than bf16 here, about twice its error, and a row's answer then
    # depends slightly on the rows it shares a forward with.
    predictor_numerics: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # The engine of the predictor's CPU forwards (model/engine.py): "auto" exports the
    # network to ONNX Runtime at load once its golden check agrees, times it against torch
    # (in the numerics above) at 1, 2, 4 ... 32 rows, and runs the sizes where it was faster
    # on it, fp32: every size on an AVX2 CPU (1.5-2x faster), up to 4 rows beside torch bf16
    # on an AMX Xeon (BENCHMARKS.md, session 13). "torch" and "onnxruntime" force one for
    # every forward ("onnxruntime" with fp32 numerics only; a failed golden check still
    # keeps torch). "onnxruntime<=N+torch" pins a split by name (up to N rows on ONNX
    # Runtime, torch above; checked, not timed): the same on every replica and start, where
    # "auto" re-times it at each load. GPUs run on torch.
    predictor_engine: str = Field("auto", pattern=ENGINE_SETTING_PATTERN)
    request_timeout_s: float = Field(30, gt=0)
    # One handle call to the predictor: past this it counts as failed and is retried once
    # (app/gateway/delivery.py), so a dead replica costs a client seconds, not the whole
    # request_timeout_s.
    predictor_call_timeout_s: float = Field(2.0, gt=0, le=600)
    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=1, le=65535)
    # How HTTPS reaches the gateway (BENCHMARKS.md has the measurements behind the default):
    # "direct": each gateway replica serves HTTPS itself (Serve direct ingress) on
    #   http_port (a second replica on the same node takes the next free port), and Serve's
    #   proxy stays up on proxy_port as a fallback route to any replica;
    # "proxy": Serve's proxy serves http_port and forwards every request to a replica
    #   (one more process hop and an actor call back to the proxy for the body).
    ingress: Literal["direct", "proxy"] = "direct"
    proxy_port: int = Field(8100, ge=1, le=65535)
    # How the gateway's handle calls reach the predictor: "grpc" (Serve's gRPC transport
    # between replicas, RAY_SERVE_USE_GRPC_BY_DEFAULT) or "actor" (Ray actor calls, Serve's
    # default). gRPC is the default because it has not been slower than actor calls in
    # our measurements, and often faster (see BENCHMARKS.md).
    handle_transport: Literal["grpc", "actor"] = "grpc"
    # A gateway sends its batches to the predictor replicas on its own node over their
    # Unix sockets (model/socket_server.py: the same call and answer for ~1 ms of predictor
    # CPU outside the forward instead of a handle call's ~4, BENCHMARKS.md session 9), and
    # through the handle to the rest or when none is up. False: every call goes through
    # the handle.
    same_node_socket: bool = True
    # An idle CPU predictor replica runs a call of at most this many rows at once on its
    # event loop, skipping its batch queue and worker thread (model/deployment.py): ~1 ms
    # less for a lone request (BENCHMARKS.md, session 11). Busy replicas batch as before.
    # 0: every call takes the batch queue.
    predictor_inline_idle_rows: int = Field(8, ge=0, le=4096)
    # Scheduling priority of Ray's worker processes (every replica): Ray's default is
    # nice 15, so on a shared machine any ordinary process (a log shipper, a load
    # generator) takes the CPU from the replicas first. Serving replicas are the
    # latency-critical work of the node; 0 puts them level with Ray's own daemons.
    worker_niceness: int = Field(0, ge=0, le=19)
    # Scheduling priority the gateway gives Ray's own processes on its node (GCS, agents,
    # monitors, Serve's controller and proxy, the rollout controller): they still get
    # every idle cycle but stop preempting the replicas (app/serve/node_priority.py;
    # p99 at 850 req/s 50-55 ms against 109-111 at 0, BENCHMARKS.md session 12).
    # 0: leave them as Ray starts them.
    housekeeping_niceness: int = Field(10, ge=0, le=19)
    # The least time between two of the raylet's gc.collect() requests to every worker of
    # its node (Ray's local_gc_min_interval_s, 10 s by default). While a replica waits for
    # room (the autoscaler asked for one the node cannot place: a laptop, or a cluster
    # waiting for a node) Ray sends one at that interval, and the gateway and predictor
    # of the node stall together every 10 s (BENCHMARKS.md session 14). The replicas
    # freeze their heaps after warm-up and Python's own collector still runs. 0: Ray's.
    ray_gc_min_interval_s: float = Field(600, ge=0)
    direct_port_span: int = Field(50, ge=1, le=1000)
    # How Serve stops a replica: drain for up to graceful_shutdown_timeout_s, polling every
    # graceful_shutdown_wait_loop_s (Serve's defaults, 20 s and 2 s, made explicit).
    graceful_shutdown_timeout_s: float = Field(20, ge=0)
    graceful_shutdown_wait_loop_s: float = Field(2, ge=0)
    # With direct ingress, how long a stopping gateway replica keeps answering on its port
    # before closing it: 30 s (Serve's default) lets a load balancer notice; a laptop with
    # no load balancer stops in seconds with a short one (deploy/config.local.yaml). Requests
    # already accepted are still answered either way (graceful_shutdown_timeout_s).
    drain_period_s: float = Field(30, ge=0, le=600)
    # Where Serve runs its HTTP proxies; one Serve application holds both deployments.
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    app_name: str = Field("cnnlstm", min_length=1)
    route_prefix: str = "/"
    # /docs, /redoc (assets served by the gateway itself, app/api/docs.py) and /openapi.json.
    # On by default: the contract is no secret, integrators and the demo need it, and every
    # data route stays authenticated. A production config may set it false (then all 404).
    docs_enabled: bool = True
    # Chaos/testing switch, off by default (model/common/faults.py): "<name>:<version>" -> the
    # fraction of predictor calls for that version that fail with an injected error.
    # Exists to exercise blue/green rollback end to end; never set it in production.
    fault_injection: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _predictor_resources(self) -> Serving:
        check_ray_resources(self.predictor_ray_resources, "serving.predictor_ray_resources")
        return self

    @model_validator(mode="after")
    def _fault_fractions(self) -> Serving:
        for key, frac in self.fault_injection.items():
            if not 0.0 <= frac <= 1.0 or key.count(":") != 1:
                raise ValueError(
                    "fault_injection maps '<name>:<version>' to a fraction in [0, 1], "
                    f"got {key!r}: {frac!r}"
                )
        return self
