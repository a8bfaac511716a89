"""Filesystem registry: resolution, listing, integrity, publishing rules."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from model.common.artifact import MANIFEST_FILE, WEIGHTS_FILE, read_manifest, write_manifest
from model.common.errors import ArtifactValidationError, ModelNotFoundError, RegistryError
from model.common.refs import ModelRef
from model.common.registry import ModelRegistry
from model.export import make_random_artifact
from tests.support.disk_events import record_disk_events


def _edit_manifest(registry: ModelRegistry, ref: ModelRef, **changes: object) -> None:
    directory = registry.artifact_dir(ref.name, ref.version)
    manifest = read_manifest(directory)
    write_manifest(directory, manifest.model_copy(update=changes))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_resolve_follows_the_default_pointer(registry_root: Path, random_ref: ModelRef) -> None:
    newer = make_random_artifact(registry_root, version="0.0.2", seed=1, make_default=False)
    registry = ModelRegistry(registry_root)
    assert registry.default_version("cnn_lstm") == "0.0.1"
    assert registry.resolve("cnn_lstm") == random_ref
    registry.set_default("cnn_lstm", "0.0.2")
    assert registry.resolve("cnn_lstm") == newer
    assert registry.resolve("cnn_lstm", "0.0.1") == random_ref


def test_resolve_picks_the_newest_version_when_there_is_no_pointer(
    registry_root: Path, random_ref: ModelRef
) -> None:
    newer = make_random_artifact(registry_root, version="0.0.2", seed=1)
    (registry_root / "cnn_lstm" / "DEFAULT").unlink()
    assert ModelRegistry(registry_root).resolve("cnn_lstm") == newer


def test_list_versions_orders_by_creation_time_not_by_name(registry_root: Path) -> None:
    for version in ("b", "c", "a"):
        make_random_artifact(registry_root, version=version)
    registry = ModelRegistry(registry_root)
    assert registry.list_versions("cnn_lstm") == ["b", "c", "a"]
    assert registry.list_models() == ["cnn_lstm"]


@pytest.mark.parametrize(("name", "version"), [("nope", None), ("cnn_lstm", "9.9.9")])
def test_resolve_raises_not_found_when_name_or_version_is_unknown(
    registry: ModelRegistry, name: str, version: str | None
) -> None:
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        registry.resolve(name, version)


def test_resolve_raises_not_found_when_default_pointer_names_a_missing_version(
    registry: ModelRegistry,
) -> None:
    (registry.root / "cnn_lstm" / "DEFAULT").write_text("7.7.7\n")
    with pytest.raises(ModelNotFoundError, match=r"default version '7\.7\.7'"):
        registry.resolve("cnn_lstm")


@pytest.mark.parametrize(
    "bad", ["..", "../cnn_lstm", "cnn_lstm/../x", "/etc", "", ".hidden", "a" * 65, "a b"]
)
def test_lookups_reject_path_traversal_names(registry: ModelRegistry, bad: str) -> None:
    with pytest.raises(ModelNotFoundError, match="invalid model"):
        registry.resolve(bad)
    with pytest.raises(ModelNotFoundError, match="invalid model"):
        registry.resolve("cnn_lstm", bad)
    with pytest.raises(ModelNotFoundError):
        registry.verify("cnn_lstm", bad)


def test_publish_rejects_invalid_names_with_value_error(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    src = registry.artifact_dir(random_ref.name, random_ref.version)
    with pytest.raises(ValueError, match="invalid model version"):
        registry.publish(src, "cnn_lstm", "../../escape")
    assert not (registry.root.parent / "escape").exists()


def test_publish_refuses_to_overwrite_an_existing_version(
    registry: ModelRegistry, random_ref: ModelRef, tmp_path: Path
) -> None:
    src = tmp_path / "copy"
    shutil.copytree(registry.artifact_dir(random_ref.name, random_ref.version), src)
    with pytest.raises(RegistryError, match="already exists"):
        registry.publish(src, random_ref.name, random_ref.version)
    assert registry.verify(random_ref.name, random_ref.version).weights_sha256 == random_ref.sha256


def test_publish_refuses_an_artifact_describing_another_version(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    src = registry.artifact_dir(random_ref.name, random_ref.version)
    with pytest.raises(ArtifactValidationError, match="refusing to publish"):
        registry.publish(src, "cnn_lstm", "0.0.2")
    assert registry.list_versions("cnn_lstm") == ["0.0.1"]


def test_publish_leaves_no_staging_directories(registry: ModelRegistry) -> None:
    make_random_artifact(registry.root, version="0.0.2")
    assert sorted(os.listdir(registry.root / "cnn_lstm")) == ["0.0.1", "0.0.2", "DEFAULT"]


def test_publish_puts_the_artifact_on_disk_before_default_names_it(
    registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEFAULT is fsynced when it moves; the files it names must be on disk before, or a
    power cut right after a publish leaves it naming empty weights."""
    events = record_disk_events(monkeypatch)
    make_random_artifact(registry.root, version="0.0.2", seed=1)
    pointer = events.index(("replace", str(registry.root / "cnn_lstm" / "DEFAULT")))
    root = str(registry.root)
    synced = {
        Path(path).name
        for kind, path in events[:pointer]
        if kind == "fsync" and path.startswith(root)
    }
    assert {WEIGHTS_FILE, MANIFEST_FILE} <= synced


def test_verify_raises_when_a_weight_byte_is_flipped(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    weights = registry.artifact_dir(random_ref.name, random_ref.version) / WEIGHTS_FILE
    _flip_byte(weights, weights.stat().st_size // 2)
    with pytest.raises(ArtifactValidationError, match="checksum mismatch"):
        registry.verify(random_ref.name, random_ref.version)


def test_verify_raises_when_the_manifest_checksum_is_edited(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    _edit_manifest(registry, random_ref, weights_sha256="0" * 64)
    with pytest.raises(ArtifactValidationError, match="checksum mismatch"):
        registry.verify(random_ref.name, random_ref.version)


def test_verify_raises_when_the_manifest_names_another_model(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    _edit_manifest(registry, random_ref, version="0.0.9")
    with pytest.raises(ArtifactValidationError, match=r"describes cnn_lstm:0\.0\.9"):
        registry.verify(random_ref.name, random_ref.version)


def test_set_default_refuses_a_version_that_does_not_verify(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.set_default("cnn_lstm", "4.0.0")
    make_random_artifact(registry.root, version="0.0.2", make_default=False)
    _flip_byte(registry.artifact_dir("cnn_lstm", "0.0.2") / WEIGHTS_FILE, 100)
    with pytest.raises(ArtifactValidationError):
        registry.set_default("cnn_lstm", "0.0.2")
    assert registry.default_version("cnn_lstm") == "0.0.1"


def test_resolve_sees_a_rewritten_manifest_despite_the_cache(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    assert registry.resolve("cnn_lstm").sha256 == random_ref.sha256
    _edit_manifest(registry, random_ref, weights_sha256="a" * 64)
    assert registry.resolve("cnn_lstm").sha256 == "a" * 64


def test_broken_versions_are_left_out_of_listings(registry: ModelRegistry) -> None:
    make_random_artifact(registry.root, version="0.0.2")
    (registry.artifact_dir("cnn_lstm", "0.0.2") / MANIFEST_FILE).write_text("{}")
    (registry.root / "cnn_lstm" / ".incoming-0.0.3-x").mkdir()
    (registry.root / "junk").mkdir()
    assert registry.list_versions("cnn_lstm") == ["0.0.1"]
    assert registry.list_models() == ["cnn_lstm"]


def test_snapshot_maps_every_version_to_its_checksum(
    registry: ModelRegistry, random_ref: ModelRef
) -> None:
    other = make_random_artifact(registry.root, name="other", version="1", seed=2)
    assert registry.snapshot() == {
        "cnn_lstm": {"0.0.1": random_ref.sha256},
        "other": {"1": other.sha256},
    }


def test_empty_registry_lists_nothing_and_resolves_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "absent")
    assert registry.list_models() == []
    assert registry.snapshot() == {}
    with pytest.raises(ModelNotFoundError):
        registry.resolve("cnn_lstm")


def test_same_seed_gives_the_same_weights(tmp_path: Path) -> None:
    a = make_random_artifact(tmp_path / "a", seed=7)
    b = make_random_artifact(tmp_path / "b", seed=7)
    c = make_random_artifact(tmp_path / "c", seed=8)
    assert a.sha256 == b.sha256 != c.sha256
    assert json.loads((tmp_path / "a/cnn_lstm/0.0.1" / MANIFEST_FILE).read_text())["golden"]
