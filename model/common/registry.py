"""Filesystem model registry rooted at MODEL_REGISTRY_PATH (spec 11.1). No torch.

Layout::

    <root>/<name>/<version>/manifest.json
    <root>/<name>/<version>/model.safetensors
    <root>/<name>/DEFAULT            # the default version's name

Versions are immutable once published; publishing stages into a hidden directory
inside the registry and renames it into place, so readers (and a sync job copying
the tree) never see half an artifact. The gateway resolves names per request, so
manifests and the DEFAULT pointer are cached keyed by the file's stat.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from model.common.artifact import (
    MANIFEST_FILE,
    NAME_RE,
    Manifest,
    fsync_path,
    read_manifest,
    verify_artifact_dir,
    write_atomic,
)
from model.common.errors import ArtifactValidationError, ModelNotFoundError, RegistryError
from model.common.refs import ModelRef

log = logging.getLogger(__name__)

DEFAULT_POINTER = "DEFAULT"
_T = TypeVar("_T")
_StatKey = tuple[int, int, int]


def _stat_key(path: Path) -> _StatKey | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    # The inode changes on every atomic replace, which catches rewrites that land
    # within the filesystem's timestamp granularity with the same size.
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text.encode())


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)
        self._cache: dict[Path, tuple[_StatKey, object]] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    # -- lookups -------------------------------------------------------------------------

    def _checked(self, kind: str, value: str) -> str:
        # A name that could escape the root cannot name a model: treat it as not found.
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise ModelNotFoundError(f"invalid model {kind} {value!r}")
        return value

    def _cached(self, path: Path, parse: Callable[[Path], _T]) -> _T | None:
        key = _stat_key(path)
        if key is None:
            return None
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return cast(_T, hit[1])
        value = parse(path)
        with self._lock:
            self._cache[path] = (key, value)
        return value

    def list_models(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(
            p.name
            for p in self._root.iterdir()
            if p.is_dir() and NAME_RE.fullmatch(p.name) and self._version_dirs(p.name)
        )

    def _version_dirs(self, name: str) -> list[str]:
        base = self._root / name
        if not base.is_dir():
            return []
        return [
            p.name
            for p in base.iterdir()
            if NAME_RE.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        ]

    def list_versions(self, name: str) -> list[str]:
        """Versions oldest -> newest by manifest created_at, then by version string.

        Versions whose manifest does not parse are left out (and logged): they can
        never be served, and one bad directory must not hide the good ones.
        """
        self._checked("name", name)
        if not (self._root / name).is_dir():
            raise ModelNotFoundError(f"model {name!r} is not in the registry at {self._root}")
        dated = []
        for version in self._version_dirs(name):
            try:
                dated.append((self.manifest(name, version).created_at, version))
            except ArtifactValidationError as exc:
                log.warning("skipping unreadable artifact %s:%s: %s", name, version, exc)
        return [version for _, version in sorted(dated)]

    def default_version(self, name: str) -> str | None:
        self._checked("name", name)
        pointer = self._root / name / DEFAULT_POINTER
        value = self._cached(pointer, lambda p: p.read_text().strip())
        if value is None:
            return None
        if not NAME_RE.fullmatch(value):
            raise RegistryError(f"{pointer} holds an invalid version {value!r}")
        return value

    def artifact_dir(self, name: str, version: str) -> Path:
        path = self._root / self._checked("name", name) / self._checked("version", version)
        if not (path / MANIFEST_FILE).is_file():
            raise ModelNotFoundError(f"model {name}:{version} is not in the registry")
        return path

    def manifest(self, name: str, version: str) -> Manifest:
        path = self.artifact_dir(name, version) / MANIFEST_FILE
        manifest = self._cached(path, lambda p: read_manifest(p.parent))
        if manifest is None:  # removed between the two stats
            raise ModelNotFoundError(f"model {name}:{version} is not in the registry")
        if (manifest.name, manifest.version) != (name, version):
            raise ArtifactValidationError(
                f"{path} describes {manifest.name}:{manifest.version}, not {name}:{version}"
            )
        return manifest

    def resolve(self, name: str, version: str | None = None) -> ModelRef:
        """Pin a name (and optional version) to exact weights.

        ``version=None`` means the DEFAULT pointer, or the newest version if there is none.
        """
        if version is None:
            version = self.default_version(name)
            if version is None:
                versions = self.list_versions(name)
                if not versions:
                    raise ModelNotFoundError(f"model {name!r} has no usable versions")
                version = versions[-1]
            elif not (self._root / name / version / MANIFEST_FILE).is_file():
                raise ModelNotFoundError(
                    f"default version {version!r} of model {name!r} is not in the registry"
                )
        manifest = self.manifest(name, version)
        return ModelRef(name=name, version=version, sha256=manifest.weights_sha256)

    def verify(self, name: str, version: str) -> Manifest:
        """Manifest schema, weights present and their SHA-256 as recorded. Hashes every time."""
        path = self.artifact_dir(name, version)
        manifest = verify_artifact_dir(path)
        if (manifest.name, manifest.version) != (name, version):
            raise ArtifactValidationError(
                f"{path} describes {manifest.name}:{manifest.version}, not {name}:{version}"
            )
        return manifest

    def snapshot(self) -> dict[str, dict[str, str]]:
        """``{name: {version: weights_sha256}}`` of every readable artifact."""
        return {
            name: {v: self.manifest(name, v).weights_sha256 for v in self.list_versions(name)}
            for name in self.list_models()
        }

    # -- changes -------------------------------------------------------------------------

    def set_default(self, name: str, version: str) -> None:
        self.verify(name, version)
        _write_atomic(self._root / name / DEFAULT_POINTER, version + "\n")

    def publish(
        self, src_dir: Path, name: str, version: str, make_default: bool = True
    ) -> ModelRef:
        """Copy a verified artifact in as ``name:version``; never overwrites a version."""
        for kind, value in (("name", name), ("version", version)):
            if not NAME_RE.fullmatch(value):
                raise ValueError(f"invalid model {kind} {value!r}: must match {NAME_RE.pattern}")
        manifest = verify_artifact_dir(src_dir)
        if (manifest.name, manifest.version) != (name, version):
            raise ArtifactValidationError(
                f"{src_dir} describes {manifest.name}:{manifest.version}, "
                f"refusing to publish it as {name}:{version}"
            )
        base = self._root / name
        target = base / version
        if target.exists():
            raise RegistryError(f"{name}:{version} already exists; versions are immutable")
        base.mkdir(parents=True, exist_ok=True)
        # Hidden staging dir on the same filesystem: the final rename is atomic, and the
        # leading dot keeps it out of listings (names must start with a letter or digit).
        staging = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=base))
        try:
            for filename in (MANIFEST_FILE, manifest.weights_file):
                shutil.copyfile(Path(src_dir) / filename, staging / filename)
                fsync_path(staging / filename)  # on disk before DEFAULT (fsynced) can name it
            verify_artifact_dir(staging)  # what landed is what was verified
            staging.chmod(0o755)  # mkdtemp makes it owner-only; replicas may run as others
            if target.exists():
                raise RegistryError(f"{name}:{version} already exists; versions are immutable")
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_path(base)  # the rename, before the pointer's
        log.info("published %s:%s (%s)", name, version, manifest.weights_sha256[:12])
        if make_default:
            self.set_default(name, version)
        return ModelRef(name=name, version=version, sha256=manifest.weights_sha256)
