"""Spec 10 backups: byte-exact round trips, and archives that must never be restored."""

from __future__ import annotations

import io
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.ops import backup as bk
from tests.support.disk_events import record_disk_events

T0 = datetime(2026, 11, 27, 2, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


def clock(t: float = T0) -> bk.Clock:
    return lambda: t


def make_registry(root: Path) -> dict[str, bytes]:
    files = {
        "cnn_lstm/DEFAULT": b"v2\n",
        "cnn_lstm/v1/manifest.json": b'{"version": "v1"}',
        "cnn_lstm/v1/model.safetensors": os.urandom(4096),
        "cnn_lstm/v2/manifest.json": b'{"version": "v2"}',
        "cnn_lstm/v2/model.safetensors": bytes(range(256)) * 64,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "cnn_lstm" / ".incoming-v3-x").mkdir()  # a half-published version: skipped
    (root / "cnn_lstm" / ".incoming-v3-x" / "model.safetensors").write_bytes(b"partial")
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rewrite_archive(archive: Path, edit: dict[str, bytes | None]) -> None:
    """Rebuild ``archive`` with some members replaced/added (bytes) and a fresh sidecar,
    as an attacker who can write the backup volume would."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar]  # type: ignore[union-attr]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            if member.name in edit:
                replacement = edit.pop(member.name)
                if replacement is None:
                    continue  # dropped
                data = replacement
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for name, added in edit.items():
            assert added is not None
            info = tarfile.TarInfo(name)
            info.size = len(added)
            tar.addfile(info, io.BytesIO(added))
    Path(f"{archive}.sha256").write_text(f"{bk.sha256_file(archive)}  {archive.name}\n")


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_registry(root)
    return root


def test_restore_reproduces_registry_byte_for_byte(registry: Path, tmp_path: Path) -> None:
    expected = {k: v for k, v in tree(registry).items() if ".incoming" not in k}
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    assert archive.name == "models-20261127T020000Z.tar.gz"
    assert Path(f"{archive}.sha256").read_text().split() == [bk.sha256_file(archive), archive.name]
    target = tmp_path / "restored"
    bk.restore(archive, target, kind="models")
    assert tree(target) == expected


def test_restore_replaces_an_existing_target_completely(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    (registry / "cnn_lstm" / "v9").mkdir()
    (registry / "cnn_lstm" / "v9" / "manifest.json").write_text("{}")
    bk.restore(archive, registry)
    assert not (registry / "cnn_lstm" / "v9").exists()
    assert [p.name for p in registry.parent.iterdir() if "restore" in p.name] == []


def test_restored_files_are_on_disk_before_the_old_tree_is_removed(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old registry is deleted once the new one is in place; a power cut then must not
    find the new files still in the page cache (empty on disk) and the old ones gone."""
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    events = record_disk_events(monkeypatch)
    real_rmtree = bk.shutil.rmtree
    unsynced_at_removal: list[str] = []

    def rmtree(path: str | Path, *args: object, **kwargs: object) -> None:
        if ".pre-restore" in str(path):  # the old tree goes now
            synced = {Path(p).name for kind, p in events if kind == "fsync"}
            unsynced_at_removal.extend(
                name
                for name in ("DEFAULT", "manifest.json", "model.safetensors")
                if name not in synced
            )
        real_rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bk.shutil, "rmtree", rmtree)
    bk.restore(archive, registry, kind="models")
    assert unsynced_at_removal == []


def test_corrupted_archive_is_refused_and_target_untouched(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    before = tree(registry)
    with pytest.raises(bk.BackupError, match="checksum"):
        bk.restore(archive, registry)
    assert tree(registry) == before


def test_archive_without_sidecar_is_refused(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    Path(f"{archive}.sha256").unlink()
    with pytest.raises(bk.BackupError, match=r"no .*sha256"):
        bk.restore(archive, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_tampered_member_is_refused_despite_a_fresh_sidecar(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    rewrite_archive(archive, {"data/cnn_lstm/v2/model.safetensors": b"backdoored weights"})
    with pytest.raises(bk.BackupError, match="SHA-256"):
        bk.restore(archive, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restore")]


@pytest.mark.parametrize("evil", ["../escape.txt", "/etc/evil", "data/../../escape.txt"])
def test_path_traversal_member_is_refused(registry: Path, tmp_path: Path, evil: str) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    rewrite_archive(archive, {evil: b"pwned"})
    with pytest.raises(bk.BackupError, match="escapes"):
        bk.restore(archive, tmp_path / "restored")
    assert not (tmp_path / "escape.txt").exists()


def test_link_member_is_refused(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]
    with tarfile.open(archive, "w:gz") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
        link = tarfile.TarInfo("data/cnn_lstm/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    Path(f"{archive}.sha256").write_text(f"{bk.sha256_file(archive)}  {archive.name}\n")
    with pytest.raises(bk.BackupError, match="link"):
        bk.restore(archive, tmp_path / "restored")


def test_member_missing_from_archive_is_refused(registry: Path, tmp_path: Path) -> None:
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    rewrite_archive(archive, {"data/cnn_lstm/DEFAULT": None})
    with pytest.raises(bk.BackupError, match="missing"):
        bk.restore(archive, tmp_path / "restored")


def test_wrong_kind_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("serving: {}\n")
    archive = bk.backup_configs([config], tmp_path / "backups", clock=clock())
    with pytest.raises(bk.BackupError, match="not models"):
        bk.restore(archive, tmp_path / "registry", kind="models")


def test_retention_prunes_only_archives_older_than_the_window(
    registry: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "backups"
    for days_ago in (40, 31, 29, 1):
        bk.backup_models(registry, storage, clock=clock(T0 - days_ago * DAY))
    bk.backup_configs([registry / "cnn_lstm" / "DEFAULT"], storage, clock=clock(T0 - 40 * DAY))
    removed = bk.backup_models(registry, storage, retention_days=30, clock=clock())
    left = bk.list_backups(storage, "models")
    assert [round((T0 - b.created.timestamp()) / DAY) for b in left] == [29, 1, 0]
    assert removed in [b.path for b in left]
    assert len(bk.list_backups(storage, "configs")) == 1  # other kinds keep their own window
    assert sorted(p.name for p in storage.iterdir() if p.name.endswith(".sha256")) == sorted(
        f"{b.path.name}.sha256" for b in bk.list_backups(storage)
    )


def test_an_archive_is_on_disk_before_older_ones_are_pruned(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut right after a backup must not leave the pruned archives gone and the
    new one (or its checksum) still in the page cache: empty or torn on disk."""
    storage = tmp_path / "backups"
    old = bk.backup_models(registry, storage, clock=clock(T0 - 40 * DAY))
    events = record_disk_events(monkeypatch)
    new = bk.backup_models(registry, storage, retention_days=30, clock=clock())
    pruned = events.index(("unlink", str(old)))
    named = events.index(("replace", str(new)))
    assert any(
        kind == "fsync" and Path(path).name.startswith(f".{new.name}.")
        for kind, path in events[:named]
    ), "the archive's bytes were not flushed before it got its name"
    assert ("replace", f"{new}.sha256") in events[:pruned], "the checksum is not whole on disk"


def test_two_backups_in_one_second_do_not_collide(registry: Path, tmp_path: Path) -> None:
    first = bk.backup_models(registry, tmp_path / "b", clock=clock())
    second = bk.backup_models(registry, tmp_path / "b", clock=clock())
    assert first != second
    assert [b.path for b in bk.list_backups(tmp_path / "b")] == [first, second]


def test_config_backup_keeps_files_and_folders(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    config.write_text("serving: {}\n")
    rules = tmp_path / "prometheus"
    (rules / "sub").mkdir(parents=True)
    (rules / "alerts.yml").write_text("groups: []\n")
    (rules / "sub" / "extra.yml").write_text("x: 1\n")
    archive = bk.backup_configs([config, rules], tmp_path / "backups", clock=clock())
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile(bk.MANIFEST).read())  # type: ignore[union-attr]
    assert sorted(manifest["files"]) == [
        "config.yaml",
        "prometheus/alerts.yml",
        "prometheus/sub/extra.yml",
    ]
    bk.restore(archive, tmp_path / "restored", kind="configs")
    assert (tmp_path / "restored" / "prometheus" / "sub" / "extra.yml").read_text() == "x: 1\n"


def test_config_backup_refuses_two_files_with_one_name(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "config.yaml").write_text("{}\n")
    with pytest.raises(bk.BackupError, match="share"):
        bk.backup_configs(
            [tmp_path / "a" / "config.yaml", tmp_path / "b" / "config.yaml"], tmp_path / "o"
        )


def test_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(bk.BackupError, match="not a directory"):
        bk.backup_models(tmp_path / "nope", tmp_path / "backups")


def test_symlinked_config_file_is_archived_as_its_content(tmp_path: Path) -> None:
    # A Kubernetes ConfigMap mounts config.yaml as a symlink into ..data/.
    real = tmp_path / "..data" / "config.yaml"
    real.parent.mkdir()
    real.write_text("serving: {}\n")
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    archive = bk.backup_configs([link], tmp_path / "backups", clock=clock())
    bk.restore(archive, tmp_path / "restored", kind="configs")
    restored = tmp_path / "restored" / "config.yaml"
    assert not restored.is_symlink()
    assert restored.read_text() == "serving: {}\n"


def test_restore_into_a_mount_point_swaps_its_contents(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {k: v for k, v in tree(registry).items() if ".incoming" not in k}
    archive = bk.backup_models(registry, tmp_path / "backups", clock=clock())
    (registry / "stray.txt").write_text("left over")
    monkeypatch.setattr(bk.os.path, "ismount", lambda p: Path(p) == registry)
    inode = registry.stat().st_ino
    bk.restore(archive, registry)
    assert registry.stat().st_ino == inode  # the directory itself was never renamed
    assert tree(registry) == expected
    assert [p.name for p in registry.iterdir() if p.name.startswith(".")] == []
