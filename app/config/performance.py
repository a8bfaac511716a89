"""Spec section 4: request batching, caches, and GPU settings."""

from __future__ import annotations

from pydantic import Field

from app.config.base import Section


class Batching(Section):
    enabled: bool = True
    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10)
    priority_queue_size: int = Field(1000, ge=1)
    # Not in the spec: batches one gateway keeps in flight per predictor replica
    # (app/gateway/batcher.py). Two: one computing, the next on its way or waiting; rows
    # beyond that wait in the gateway's queue, where they join the next batch in priority
    # order, instead of in the predictor's. At 500 req/s on 2 cores, 2 measured a lower
    # mean and p99 than 4 in four alternated runs each (BENCHMARKS.md, session 8); 1
    # leaves the predictor idle during every hop and halved what a flood admitted.
    batches_in_flight_per_replica: int = Field(2, ge=1, le=64)
    # Not in the spec: how long a batch for an idle predictor may wait for more rows, only
    # while requests arrive, on average, closer together than this (app/gateway/batcher.py;
    # never longer than batch_wait_timeout_s). 3 ms engages above ~330 req/s per gateway:
    # at 500 req/s on 2 cores batches of 2.5 rows instead of 1.1 took a fifth of a core
    # off the box (predictor 49 -> 32 % of a core) for +3.5 ms of p50 (BENCHMARKS.md,
    # session 21). A lone request never waits. 0: an idle predictor gets every row at once.
    idle_hold_ms: float = Field(3, ge=0, le=10_000)
    # Not in the spec: keep an idle gateway's prediction path warm (app/gateway/keep_warm.py).
    # When no row was queued or answered for this long, one synthetic row goes the whole
    # way to a predictor and back, counted nowhere. On the 2-vCPU box of BENCHMARKS.md
    # session 32, 20 ms took 0.35-1.1 ms off a lone request's p50 for 3-10 % of a core
    # while idle; nothing under traffic. 0: off (the default: it spends idle CPU).
    keep_warm_ms: float = Field(0, ge=0, le=60_000)
    # Not in the spec: how long after the last real request keep-warm goes on. Sparse
    # traffic (a request a second, or a minute) stays warm; a gateway nobody calls spends
    # nothing, and none before its first request.
    keep_warm_for_s: float = Field(60, gt=0, le=86_400)
    # Not in the spec: latency-aware admission (app/gateway/admission.py). A row whose
    # expected queue wait exceeds this is refused with 429 + Retry-After (rows below the
    # default priority get half), so admitted requests keep the p99 target of spec 12.1
    # (100 ms) under overload: half of it for queueing, the rest for the forward. 0: off.
    max_queue_wait_ms: float = Field(50, ge=0, le=60_000)
    # Not in the spec: shedding on the gateway's own saturation (app/gateway/loop_lag.py).
    # While its event loop runs timers this late (smoothed), new predictions get 429 +
    # Retry-After (half of it for rows below the default priority). A loop 100 ms behind
    # has lost the p99 target of spec 12.1 on its own. 0: off.
    max_loop_lag_ms: float = Field(100, ge=0, le=60_000)
    # Not in the spec: the adaptive limit on predictions in flight in one gateway
    # (app/gateway/concurrency.py). While their mean time in the gateway is over this, the
    # limit shrinks (never below one full batch) and the excess gets 429 + Retry-After.
    # Near capacity on 2 cores the mean is ~40 ms (p99 ~100); overloaded from a pool of
    # 64 connections, ~110 ms with nothing refused. 0: off.
    max_in_flight_mean_ms: float = Field(75, ge=0, le=60_000)


class CacheConfig(Section):
    enabled: bool = True
    ttl_seconds: float = Field(gt=0)
    max_entries: int = Field(ge=1)


class Caching(Section):
    model_cache: CacheConfig = CacheConfig(ttl_seconds=3600, max_entries=100)
    feature_cache: CacheConfig = CacheConfig(ttl_seconds=600, max_entries=1000)


class GpuOptimization(Section):
    enable_tf32: bool = True
    memory_fraction: float = Field(0.8, gt=0, le=1)
    enable_cudnn_benchmark: bool = True
    cleanup_interval_s: float = Field(300, gt=0)
    # Not in the spec: on CUDA, warm-up captures the forward as one CUDA graph per
    # batch-size bucket (model/cuda_graphs.py; 0.40 against 0.71 ms at batch 32 on an H200).
    cuda_graphs: bool = True
