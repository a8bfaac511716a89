"""The on-disk model artifact: ``manifest.json`` + ``model.safetensors`` in one directory.

No torch here: the gateway and the registry read manifests and check checksums
without loading a network. The manifest carries everything needed to rebuild and
trust the model: architecture, feature spec, normalisation, training metrics and a
golden sample that the runtime replays at load time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.common.errors import ArtifactValidationError
from model.common.features import FEATURE_NAMES, FEATURE_SPEC_VERSION, NUM_FEATURES, WINDOW

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "model.safetensors"
# Names and versions become path components: one safe segment, never "." or "..".
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)
_CHUNK = 1 << 20

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ArchitectureConfig(BaseModel):
    model_config = _STRICT

    type: Literal["cnn_lstm"] = "cnn_lstm"
    num_features: int = Field(default=NUM_FEATURES, ge=1)
    window: int = Field(default=WINDOW, ge=1)
    conv_channels: int = Field(default=64, ge=1)
    kernel_size: int = Field(default=5, ge=1)
    conv_layers: int = Field(default=2, ge=1)
    lstm_hidden: int = Field(default=128, ge=1)
    lstm_layers: int = Field(default=2, ge=1)
    head_hidden: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class FeatureSpecInfo(BaseModel):
    model_config = _STRICT

    version: str = FEATURE_SPEC_VERSION
    names: tuple[str, ...] = FEATURE_NAMES
    window: int = Field(default=WINDOW, ge=1)


class Normalization(BaseModel):
    """Per-feature standardisation fitted on the training split only."""

    model_config = _STRICT

    mean: list[float]
    std: list[float]
    # Std of the training return target: the network predicts returns in these units
    # and the runtime multiplies back to log-return units.
    return_std: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _check_lengths(self) -> Normalization:
        if len(self.mean) != NUM_FEATURES or len(self.std) != NUM_FEATURES:
            raise ValueError(
                f"mean and std need {NUM_FEATURES} values, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0.0 for s in self.std):
            raise ValueError("every std must be > 0")
        return self


class TrainingMetrics(BaseModel):
    model_config = _STRICT

    data_source: str
    train_rows: int = Field(ge=0)
    val_rows: int = Field(ge=0)
    epochs: int = Field(ge=0)
    train_seconds: float = Field(ge=0.0)
    val_loss: float
    val_directional_accuracy: float = Field(ge=0.0, le=1.0)
    naive_directional_accuracy: float = Field(ge=0.0, le=1.0)
    val_return_corr: float = Field(ge=-1.0, le=1.0)
    seed: int
    horizon_bars: int = Field(ge=1)


class GoldenSample(BaseModel):
    """Raw feature windows and the outputs the exported model gave for them.

    ``expected`` rows are (expected log return, prob_up). The runtime compares the
    return column in units of ``Normalization.return_std`` and prob_up as is, both
    against ``atol``, so the check has the same power whatever the asset's volatility.
    """

    model_config = _STRICT

    inputs: list[list[list[float]]] = Field(min_length=1)
    expected: list[list[float]] = Field(min_length=1)
    atol: float = Field(gt=0.0)


class Manifest(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=NAME_PATTERN)
    created_at: datetime
    description: str = ""
    architecture: ArchitectureConfig
    feature_spec: FeatureSpecInfo
    normalization: Normalization
    weights_file: str = Field(default=WEIGHTS_FILE, pattern=NAME_PATTERN)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training: TrainingMetrics
    golden: GoldenSample
    horizon_bars: int = Field(ge=1)

    @field_validator("created_at")
    @classmethod
    def _assume_utc(cls, value: datetime) -> datetime:
        # Versions are ordered by created_at; mixing naive and aware datetimes would raise.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    @model_validator(mode="after")
    def _check_consistency(self) -> Manifest:
        arch, spec, golden = self.architecture, self.feature_spec, self.golden
        if spec.window != arch.window or len(spec.names) != arch.num_features:
            raise ValueError(
                f"feature_spec (window {spec.window}, {len(spec.names)} names) does not match "
                f"architecture (window {arch.window}, {arch.num_features} features)"
            )
        if len(golden.inputs) != len(golden.expected):
            raise ValueError("golden inputs and expected outputs differ in length")
        for sample in golden.inputs:
            if len(sample) != arch.window or any(len(row) != arch.num_features for row in sample):
                raise ValueError(f"every golden input must be {arch.window} x {arch.num_features}")
        if any(len(row) != 2 for row in golden.expected):
            raise ValueError("every golden expected row must hold 2 outputs")
        return self


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks so large weights never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _summarise(err: ValidationError, limit: int = 5) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in err.errors()[:limit]
    ]
    more = err.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def read_manifest(artifact_dir: Path | str) -> Manifest:
    path = Path(artifact_dir) / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactValidationError(f"{path} is missing") from None
    except OSError as exc:
        raise ArtifactValidationError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactValidationError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ArtifactValidationError(f"{path} is invalid: {_summarise(exc)}") from exc


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (temp file in the same folder, fsync, rename).

    The one atomic file write of the project: manifests and registry pointers (0644:
    replicas may run as another user), secrets (0600), the rollout state.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries (a rename in it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(artifact_dir: Path | str, manifest: Manifest) -> Path:
    """Write the manifest atomically: readers see the old file or the new, never half."""
    target = Path(artifact_dir) / MANIFEST_FILE
    write_atomic(target, manifest.model_dump_json(indent=2).encode())
    return target


def verify_artifact_dir(artifact_dir: Path | str) -> Manifest:
    """Schema-check the manifest and check the weights' SHA-256 against it."""
    directory = Path(artifact_dir)
    manifest = read_manifest(directory)
    weights = directory / manifest.weights_file
    if not weights.is_file():
        raise ArtifactValidationError(f"weights file {weights} is missing")
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        raise ArtifactValidationError(
            f"checksum mismatch for {weights}: manifest says {manifest.weights_sha256}, "
            f"file has {actual}"
        )
    return manifest


def check_serving_compatible(manifest: Manifest) -> None:
    """Refuse artifacts trained on features this code does not compute."""
    spec = manifest.feature_spec
    if spec.version != FEATURE_SPEC_VERSION:
        raise ArtifactValidationError(
            f"{manifest.name}:{manifest.version} uses feature spec {spec.version!r}, "
            f"this runtime computes {FEATURE_SPEC_VERSION!r}"
        )
    if tuple(spec.names) != FEATURE_NAMES or spec.window != WINDOW:
        raise ArtifactValidationError(
            f"{manifest.name}:{manifest.version} claims feature spec {spec.version!r} but its "
            f"names or window ({spec.window}) differ from this runtime's"
        )
