"""The spec-shaped configuration file and the spec 8 environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.config import ConfigError, ServiceConfig, load_config_file, parse_config
from app.config.env import Settings, load_service_config

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "spec" / "ray-serve-deployment-spec.md"

SPEC8_VARS = {
    "MODEL_REGISTRY_PATH": (
        "/srv/models",
        lambda s, c: str(c.model_registry.path) == "/srv/models",
    ),
    "RAY_ADDRESS": ("ray://head:10001", lambda s, c: s.RAY_ADDRESS == "ray://head:10001"),
    "DEVICE": ("GPU", lambda s, c: s.DEVICE == "gpu"),
    "LOG_LEVEL": ("debug", lambda s, c: c.logging.level == "DEBUG"),
    "MAX_BATCH_SIZE": ("16", lambda s, c: c.batching.max_batch_size == 16),
    "BATCH_TIMEOUT_MS": (
        "25",
        lambda s, c: c.batching.batch_wait_timeout_s == pytest.approx(0.025),
    ),
    "CACHE_TTL_SECONDS": ("120", lambda s, c: c.caching.model_cache.ttl_seconds == 120),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*SPEC8_VARS, "CNNLSTM_CONFIG"]:
        monkeypatch.delenv(name, raising=False)


def test_defaults_equal_the_spec_when_no_file_and_no_env() -> None:
    s, c = load_service_config(None)
    assert (Path("/models"), "auto", "cpu", "INFO") == (
        s.MODEL_REGISTRY_PATH,
        s.RAY_ADDRESS,
        s.DEVICE,
        s.LOG_LEVEL,
    )
    assert (s.MAX_BATCH_SIZE, s.BATCH_TIMEOUT_MS, s.CACHE_TTL_SECONDS) == (32, 10, 3600)
    assert c.deployment.deployment_name == "cnn_lstm_predictor"
    assert c.batching.max_batch_size == 32
    assert c.batching.batch_wait_timeout_s == 0.01
    assert c.batching.priority_queue_size == 1000
    assert c.caching.feature_cache.ttl_seconds == 600
    assert c.caching.feature_cache.max_entries == 1000
    assert c.market_hours_autoscaling.min_replicas == 5
    assert c.off_hours_autoscaling.target_num_ongoing_requests_per_replica == 10
    assert c.resource_tiers["large"].num_gpus == 1.0
    assert c.metrics.buckets("prediction_latency_ms") == [10, 25, 50, 75, 100, 250, 500, 1000]
    assert c.metrics.buckets("batch_size") == [1, 5, 10, 20, 32]
    assert c.blue_green_deployment.rollback_threshold_pct == 5
    assert c.performance_targets.latency.p99_ms == 100


@pytest.mark.parametrize("name", sorted(SPEC8_VARS))
def test_settings_read_each_spec8_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    value, check = SPEC8_VARS[name]
    monkeypatch.setenv(name, value)
    s, c = load_service_config(None)
    assert check(s, c)


def test_unknown_key_is_an_error_not_silently_dropped(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"autoscaling": {"target_num_ongoing_request_per_replica": 3}}))
    with pytest.raises(ConfigError, match="target_num_ongoing_request_per_replica"):
        load_config_file(f)


def test_bad_values_are_reported_with_their_location() -> None:
    with pytest.raises(ConfigError, match=r"batching\.max_batch_size"):
        parse_config({"batching": {"max_batch_size": 0}})
    with pytest.raises(ConfigError, match="min_replicas"):
        parse_config({"autoscaling": {"min_replicas": 9, "max_replicas": 3}})


def test_file_values_survive_and_env_overrides_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        yaml.safe_dump({"batching": {"max_batch_size": 64, "batch_wait_timeout_s": 0.002}})
    )
    _, c = load_service_config(f)
    assert c.batching.max_batch_size == 64
    monkeypatch.setenv("MAX_BATCH_SIZE", "8")
    _, c = load_service_config(f)
    assert c.batching.max_batch_size == 8
    assert c.batching.batch_wait_timeout_s == 0.002


def test_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE", "tpu")
    with pytest.raises(ValueError, match="DEVICE"):
        Settings()


@pytest.mark.parametrize("path", sorted((ROOT / "deploy").glob("config*.yaml")), ids=str)
def test_shipped_config_files_validate(path: Path) -> None:
    assert isinstance(load_config_file(path), ServiceConfig)


@pytest.mark.skipif(not SPEC.exists(), reason="shared spec not beside the repo")
def test_every_spec8_variable_is_a_setting() -> None:
    text = SPEC.read_text()
    section = text[text.index("## 8. Environment Variables") : text.index("## 9.")]
    names = {
        line.strip()[:-1]
        for line in section.splitlines()
        if line.startswith("  ") and line.strip().endswith(":") and line.strip()[:-1].isupper()
    }
    assert names == set(SPEC8_VARS)
    assert names <= set(Settings.model_fields)


def test_the_laptop_profile_binds_loopback_and_production_all_interfaces() -> None:
    from app.serve.options import http_options

    laptop = load_config_file(ROOT / "deploy/config.local.yaml")
    production = load_config_file(ROOT / "deploy/config.yaml")
    assert http_options(laptop)["host"] == "127.0.0.1"
    assert http_options(production)["host"] == "0.0.0.0"


def test_a_partial_market_hours_profile_keeps_spec_3_2_1_for_the_rest() -> None:
    # Only the ceiling is raised: floor, target, delays and gains must stay spec 3.2.1's,
    # not silently become spec 3.1's (min 2, target 5, delays 30/300, gains 1.0/0.5).
    c = parse_config({"market_hours_autoscaling": {"max_replicas": 40}}).market_hours_autoscaling
    assert (c.min_replicas, c.max_replicas, c.target_num_ongoing_requests_per_replica) == (5, 40, 3)
    assert (c.upscale_delay_s, c.downscale_delay_s) == (15, 120)
    assert (c.upscale_smoothing_factor, c.downscale_smoothing_factor) == (1.5, 0.3)


def test_a_partial_off_hours_profile_keeps_spec_3_2_2_for_the_rest() -> None:
    c = parse_config({"off_hours_autoscaling": {"min_replicas": 1}}).off_hours_autoscaling
    assert (c.min_replicas, c.max_replicas) == (1, 10)
    assert c.target_num_ongoing_requests_per_replica == 10
    assert (c.upscale_delay_s, c.downscale_delay_s) == (60, 300)
    assert (c.upscale_smoothing_factor, c.downscale_smoothing_factor) == (1.0, 0.5)
