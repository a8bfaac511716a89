"""A consistent copy of the prediction audit trail (:mod:`app.audit`), for ``backup audit``.

The gateways keep writing while a backup runs, and a stream's chain and its sealed files
change together (a seal appends to ``chain.jsonl``, renames the sealed file in and deletes
``current.jsonl``; retention appends a ``retire`` entry, then deletes). A copy is taken
stream by stream with the chain read first and read again after the files: it is kept only
if the chain did not move meanwhile and the copy passes :func:`app.audit.chain.verify_trail`
on its own, otherwise it is taken again. Every archive of the trail therefore verifies once
restored. Sealed files never change once written, so they are hard-linked where the
filesystem allows (a copy otherwise); ``current.jsonl`` is copied.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from app.audit.chain import CHAIN, CURRENT, streams, verify_trail
from app.ops.archive import BackupError

ATTEMPTS = 3
_RETRY_PAUSE_S = 0.2


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem (the backup volume), or links not allowed
        shutil.copyfile(source, target)


def _copy_stream(stream: Path, out: Path) -> bool:
    """Copy one stream; False when its chain moved while the files were copied."""
    out.mkdir(mode=0o750)
    chain_path = stream / CHAIN
    chain = chain_path.read_bytes() if chain_path.exists() else None
    for path in sorted(stream.iterdir()):
        name = path.name
        if name.startswith(".") or name == CHAIN or path.is_symlink() or not path.is_file():
            continue  # the writer's lock and hidden temp files are not part of the trail
        try:
            if name == CURRENT:
                shutil.copyfile(path, out / name)
            else:
                _link_or_copy(path, out / name)
        except FileNotFoundError:
            continue  # sealed or retired meanwhile: the chain check below sees it
    if chain is not None:
        (out / CHAIN).write_bytes(chain)
    after = chain_path.read_bytes() if chain_path.exists() else None
    return after == chain


def _try_snapshot(root: Path, staging: Path) -> list[str]:
    """Copy every stream into ``staging``; what stops the copy from standing on its own."""
    problems: list[str] = []
    for stream in streams(root):
        if not _copy_stream(stream, staging / stream.name):
            problems.append(f"{stream.name}: the chain moved during the copy")
    problems += [f"{r.stream}: {p}" for r in verify_trail(staging) for p in r.problems]
    return problems


def snapshot_trail(root: Path, staging: Path, *, attempts: int = ATTEMPTS) -> None:
    """Fill the empty directory ``staging`` with a copy of the trail at ``root`` that
    verifies; BackupError (``staging`` left empty) when no attempt gives one."""
    if not root.is_dir():
        raise BackupError(f"audit trail {root} is not a directory")
    problems: list[str] = []
    for attempt in range(attempts):
        if attempt:
            time.sleep(_RETRY_PAUSE_S)
        problems = _try_snapshot(root, staging)
        if not problems:
            return
        for entry in staging.iterdir():
            shutil.rmtree(entry)
    raise BackupError(
        f"no consistent copy of the audit trail in {attempts} attempts "
        f"(run `cnnlstm audit verify`): {'; '.join(problems[:5])}"
    )
