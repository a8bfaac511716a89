"""Artifact format: manifest schema, atomic writes, checksums, serving compatibility."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from model.common.artifact import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Manifest,
    Normalization,
    check_serving_compatible,
    read_manifest,
    sha256_file,
    verify_artifact_dir,
    write_manifest,
)
from model.common.errors import ArtifactValidationError
from model.common.features import FEATURE_SPEC_VERSION, NUM_FEATURES
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry


def _manifest_json(registry: ModelRegistry, ref: ModelRef) -> dict:
    path = registry.artifact_dir(ref.name, ref.version) / MANIFEST_FILE
    return json.loads(path.read_text())


def test_manifest_round_trips_through_write_and_read(
    registry: ModelRegistry, random_ref: ModelRef, tmp_path: Path
) -> None:
    manifest = registry.manifest(random_ref.name, random_ref.version)
    out = tmp_path / "out"
    out.mkdir()
    write_manifest(out, manifest)
    assert read_manifest(out) == manifest
    assert [p.name for p in out.iterdir()] == [MANIFEST_FILE]  # no temp files left


def test_manifest_records_the_contract_fields(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    manifest = registry.manifest(random_ref.name, random_ref.version)
    assert manifest.schema_version == 1
    assert manifest.weights_file == WEIGHTS_FILE
    assert manifest.weights_sha256 == random_ref.sha256
    assert manifest.feature_spec.version == FEATURE_SPEC_VERSION
    assert manifest.created_at.tzinfo is not None
    assert len(manifest.golden.inputs) == len(manifest.golden.expected) == 4
    assert all(0.0 <= row[1] <= 1.0 for row in manifest.golden.expected)


def test_read_manifest_raises_when_json_is_malformed(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactValidationError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_read_manifest_raises_when_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactValidationError, match="missing"):
        read_manifest(tmp_path)


def test_read_manifest_names_the_field_when_schema_is_violated(
    registry: ModelRegistry, random_ref: ModelRef, tmp_path: Path
) -> None:
    data = _manifest_json(registry, random_ref)
    data["normalization"]["std"][3] = -1.0
    data["surprise"] = True
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ArtifactValidationError) as info:
        read_manifest(tmp_path)
    assert "normalization" in str(info.value)
    assert "surprise" in str(info.value)


@pytest.mark.parametrize(
    ("mean", "std"),
    [
        ([0.0] * (NUM_FEATURES - 1), [1.0] * (NUM_FEATURES - 1)),
        ([0.0] * NUM_FEATURES, [1.0] * (NUM_FEATURES - 1) + [0.0]),
        ([float("nan")] * NUM_FEATURES, [1.0] * NUM_FEATURES),
    ],
)
def test_normalization_rejects_bad_statistics(mean: list[float], std: list[float]) -> None:
    with pytest.raises(ValidationError):
        Normalization(mean=mean, std=std)


def test_manifest_rejects_golden_inputs_of_the_wrong_shape(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    data = _manifest_json(registry, random_ref)
    data["golden"]["inputs"][0] = data["golden"]["inputs"][0][:-1]
    with pytest.raises(ValidationError, match="golden input"):
        Manifest.model_validate(data)


def test_manifest_rejects_a_weights_file_outside_the_artifact(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    data = _manifest_json(registry, random_ref)
    data["weights_file"] = "../other/model.safetensors"
    with pytest.raises(ValidationError, match="weights_file"):
        Manifest.model_validate(data)


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 9000  # spans several read chunks
    (tmp_path / "f").write_bytes(blob)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(blob).hexdigest()


def test_verify_artifact_dir_raises_when_weights_are_missing(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    directory = registry.artifact_dir(random_ref.name, random_ref.version)
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactValidationError, match="missing"):
        verify_artifact_dir(directory)


def test_check_serving_compatible_rejects_another_feature_spec(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    manifest = registry.manifest(random_ref.name, random_ref.version)
    check_serving_compatible(manifest)
    other = manifest.model_copy(
        update={"feature_spec": manifest.feature_spec.model_copy(update={"version": "ohlcv16-v0"})}
    )
    with pytest.raises(ArtifactValidationError, match="ohlcv16-v0"):
        check_serving_compatible(other)
