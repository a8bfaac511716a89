"""The backup archive format, written and read in one place.

``<name>.tar.gz`` holds the files under ``data/`` and then ``MANIFEST.json`` (format,
kind, creation time, the SHA-256 and size of every file, hashed from exactly the bytes
that went into the archive); beside it, ``<name>.tar.gz.sha256`` in ``sha256sum`` format
covers the archive as a whole. Reading checks all of it and refuses anything that could
write outside the extraction directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

from model.common.artifact import write_atomic

Kind = Literal["models", "configs", "audit"]
MANIFEST = "MANIFEST.json"
DATA = "data"
SIDECAR = ".sha256"
_CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup could not be made, or an archive failed verification (nothing restored)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingReader:
    """Hashes exactly what tarfile copies, so a file changing mid-backup cannot leave a
    manifest entry that disagrees with the archived bytes."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self.digest.update(data)
        return data


def write_archive(
    kind: Kind, entries: Sequence[tuple[Path, str]], target: Path, now: float
) -> Path:
    """Write ``target`` (and its sidecar) atomically from (source file, archive name) pairs.

    Sources are read through symlinks (a Kubernetes ConfigMap file is one), so the archive
    only ever holds regular files.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    files: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for src, arc in entries:
                with src.open("rb") as fh:
                    info = tarfile.TarInfo(f"{DATA}/{arc}")
                    stat = os.fstat(fh.fileno())
                    info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
                    reader = _HashingReader(fh)
                    tar.addfile(info, reader)
                files[arc] = {"sha256": reader.digest.hexdigest(), "size": info.size}
            manifest = {"format": 1, "kind": kind, "created": now, "files": files}
            blob = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(now), 0o644
            tar.addfile(info, io.BytesIO(blob))
        # On disk before it is named: the caller prunes older archives next, and a power
        # cut must not leave those gone and this one empty.
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Whole or absent: a torn sidecar would make restore refuse a good archive.
    write_atomic(Path(str(target) + SIDECAR), f"{digest}  {target.name}\n".encode())
    return target


def check_sidecar(archive: Path) -> None:
    sidecar = Path(str(archive) + SIDECAR)
    if not sidecar.is_file():
        raise BackupError(f"refusing {archive.name}: no {sidecar.name} checksum next to it")
    expected = sidecar.read_text(encoding="utf-8").split()[0].lower()
    actual = sha256_file(archive)
    if actual != expected:
        raise BackupError(
            f"refusing {archive.name}: archive checksum {actual[:16]}... does not match "
            f"{sidecar.name} ({expected[:16]}...): the archive is corrupted or was altered"
        )


def _member_path(member: tarfile.TarInfo) -> str | None:
    """The manifest key for a data member; raises on anything unsafe."""
    name = member.name
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name or ":" in parts[0]:
        raise BackupError(f"refusing archive: member {name!r} escapes the target directory")
    if not (member.isfile() or member.isdir()):
        raise BackupError(f"refusing archive: member {name!r} is a link or device")
    if member.isdir() or name == MANIFEST:
        return None
    if parts[0] != DATA or len(parts) < 2:
        raise BackupError(f"refusing archive: unexpected member {name!r}")
    return PurePosixPath(*parts[1:]).as_posix()


def extract_verified(archive: Path, staging: Path, kind: Kind | None) -> dict[str, Any]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            paths = {m.name: _member_path(m) for m in members}
            head = tar.extractfile(MANIFEST) if MANIFEST in paths else None
            if head is None:
                raise BackupError(f"refusing {archive.name}: no {MANIFEST} inside")
            manifest: dict[str, Any] = json.loads(head.read())
            if kind is not None and manifest.get("kind") != kind:
                raise BackupError(f"{archive.name} holds {manifest.get('kind')}, not {kind}")
            files: dict[str, Any] = manifest["files"]
            seen = set()
            for member in members:
                rel = paths[member.name]
                if rel is None:
                    continue
                entry = files.get(rel)
                if entry is None:
                    raise BackupError(f"refusing archive: {rel!r} is not in the manifest")
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                src = tar.extractfile(member)
                assert src is not None  # regular file, checked above
                with out.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                    # On disk before restore swaps it in and deletes the old tree.
                    dst.flush()
                    os.fsync(dst.fileno())
                if digest.hexdigest() != entry["sha256"]:
                    raise BackupError(f"refusing archive: {rel!r} fails its SHA-256 check")
                seen.add(rel)
            missing = sorted(set(files) - seen)
            if missing:
                raise BackupError(f"refusing archive: files missing from it: {missing[:5]}")
            return manifest
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as exc:
        raise BackupError(f"refusing {archive.name}: unreadable archive ({exc})") from exc
