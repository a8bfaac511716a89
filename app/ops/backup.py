"""Spec 10: timestamped, checksummed backups of the model registry and the configuration,
and (issue 14) of the prediction audit trail.

Archives are ``<kind>-<UTC stamp>.tar.gz`` in the section's ``storage_path`` (format in
:mod:`app.ops.archive`); retention goes by the time in the name. A restore verifies the
archive's checksum and every file's before it touches the target: it extracts beside the
target, checks, and only then swaps the tree into place, so a corrupted or tampered archive
never changes anything.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from app.ops.archive import (
    MANIFEST,
    SIDECAR,
    BackupError,
    Kind,
    check_sidecar,
    extract_verified,
    sha256_file,
    write_archive,
)
from app.ops.audit_snapshot import snapshot_trail

__all__ = [
    "MANIFEST",
    "BackupError",
    "BackupInfo",
    "Clock",
    "backup_audit",
    "backup_configs",
    "backup_models",
    "list_backups",
    "prune",
    "restore",
    "sha256_file",
]

Clock = Callable[[], float]
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(models|configs|audit)-(\d{8}T\d{6}Z)(?:-(\d+))?\.tar\.gz$")


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    kind: Kind
    created: datetime
    size: int
    has_checksum: bool


def _tree_files(root: Path, prefix: str = "") -> Iterable[tuple[Path, str]]:
    """Regular files under ``root``; hidden entries (staging dirs, temp files) and links
    are left out: they are either half-written or point outside what we own."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            yield path, prefix + path.relative_to(root).as_posix()


def _new_archive(
    kind: Kind,
    entries: list[tuple[Path, str]],
    storage_path: Path,
    retention_days: float | None,
    now: float,
) -> Path:
    """Write the next ``<kind>-<stamp>`` archive, then prune its kind if a retention is given."""
    storage = Path(storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime(_STAMP)
    target = storage / f"{kind}-{stamp}.tar.gz"
    n = 1
    while target.exists():  # two backups within one second keep both
        n += 1
        target = storage / f"{kind}-{stamp}-{n}.tar.gz"
    archive = write_archive(kind, entries, target, now)
    if retention_days is not None:
        prune(storage, retention_days, kind=kind, clock=lambda: now)
    return archive


def backup_models(
    registry_root: Path,
    storage_path: Path,
    *,
    retention_days: float | None = None,
    clock: Clock = time.time,
) -> Path:
    """Archive the whole registry tree; prune archives past ``retention_days`` if given."""
    root = Path(registry_root)
    if not root.is_dir():
        raise BackupError(f"model registry {root} is not a directory")
    return _new_archive("models", list(_tree_files(root)), storage_path, retention_days, clock())


def backup_configs(
    files: Sequence[Path],
    storage_path: Path,
    *,
    retention_days: float | None = None,
    clock: Clock = time.time,
    secrets: Sequence[Path] = (),
) -> Path:
    """Archive config files (by base name) and folders (as ``<folder name>/...``), leaving
    out the key files ``secrets`` names wherever they turn up (a folder may hold them)."""
    entries: list[tuple[Path, str]] = []
    for item in map(Path, files):
        if item.is_dir():
            entries += _tree_files(item, prefix=f"{item.name}/")
        elif item.is_file():
            entries.append((item, item.name))
        else:
            raise BackupError(f"config path {item} does not exist")
    keys = {Path(p).resolve() for p in secrets}
    entries = [(src, arc) for src, arc in entries if src.resolve() not in keys]
    names = [arc for _, arc in entries]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise BackupError(f"two config files would share an archive name: {clashes}")
    return _new_archive("configs", entries, storage_path, retention_days, clock())


def backup_audit(
    audit_root: Path,
    storage_path: Path,
    *,
    retention_days: float | None = None,
    clock: Clock = time.time,
) -> Path:
    """Archive the audit trail as a copy that verifies (:mod:`app.ops.audit_snapshot`),
    its streams as ``stream-<n>/...``; prune archives past ``retention_days`` if given."""
    storage = Path(storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    # Hidden, on the archive's own volume: list_backups and prune never see it.
    staging = Path(tempfile.mkdtemp(prefix=".audit-snapshot-", dir=storage))
    try:
        snapshot_trail(Path(audit_root), staging)
        entries = list(_tree_files(staging))
        return _new_archive("audit", entries, storage, retention_days, clock())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def list_backups(storage_path: Path, kind: Kind | None = None) -> list[BackupInfo]:
    """Archives in ``storage_path`` (oldest first), by the time in their names."""
    storage = Path(storage_path)
    if not storage.is_dir():
        return []
    found: list[tuple[datetime, int, BackupInfo]] = []
    for path in storage.iterdir():
        match = _NAME_RE.match(path.name)
        if not match or (kind is not None and match.group(1) != kind):
            continue
        created = datetime.strptime(match.group(2), _STAMP).replace(tzinfo=UTC)
        info = BackupInfo(
            path=path,
            kind=cast(Kind, match.group(1)),
            created=created,
            size=path.stat().st_size,
            has_checksum=Path(str(path) + SIDECAR).is_file(),
        )
        found.append((created, int(match.group(3) or 1), info))
    return [info for _, _, info in sorted(found, key=lambda t: (t[0], t[1]))]


def prune(
    storage_path: Path,
    retention_days: float,
    *,
    kind: Kind | None = None,
    clock: Clock = time.time,
) -> list[Path]:
    """Delete archives (and sidecars) older than ``retention_days``; the time is the one in
    the name, not the file's mtime, which a copy between volumes resets."""
    cutoff = clock() - retention_days * 86400.0
    removed = []
    for info in list_backups(storage_path, kind):
        if info.created.timestamp() < cutoff:
            info.path.unlink(missing_ok=True)
            Path(str(info.path) + SIDECAR).unlink(missing_ok=True)
            removed.append(info.path)
    return removed


def _swap_directory(staging: Path, target: Path) -> None:
    aside = target.with_name(f".{target.name}.pre-restore-{os.getpid()}")
    had_target = target.exists()
    if had_target:
        os.rename(target, aside)
    try:
        os.rename(staging, target)
    except OSError:
        if had_target:
            os.rename(aside, target)  # put the old tree back before reporting
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _swap_contents(staging: Path, target: Path) -> None:
    """For a mount point (a volume cannot be renamed): move entries, one rename each."""
    aside = target / f".pre-restore-{os.getpid()}"
    aside.mkdir()
    moved: list[str] = []
    try:
        for entry in sorted(os.listdir(target)):
            if (target / entry) not in (aside, staging):
                os.rename(target / entry, aside / entry)
                moved.append(entry)
        for entry in sorted(os.listdir(staging)):
            os.rename(staging / entry, target / entry)
    except OSError:
        for entry in moved:  # best effort: bring the old tree back
            if not (target / entry).exists():
                os.rename(aside / entry, target / entry)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def restore(archive: Path, target: Path, *, kind: Kind | None = None) -> Path:
    """Verify ``archive`` completely, then replace ``target`` with its contents.

    The old tree is renamed aside and deleted only after the new one is in place, so a
    crash leaves either the old or the new tree (plus, at worst, a ``.pre-restore`` copy).
    A mount point (the registry volume in a container) is swapped entry by entry instead.
    """
    archive, target = Path(archive), Path(target)
    check_sidecar(archive)
    mounted = target.is_dir() and os.path.ismount(target)
    base = target if mounted else target.parent
    base.mkdir(parents=True, exist_ok=True)
    # Staging on the target's own filesystem keeps the final renames atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".restore-{target.name}-", dir=base))
    try:
        extract_verified(archive, staging, kind)
        staging.chmod(0o755)
        if mounted:
            _swap_contents(staging, target)
        else:
            _swap_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
