"""``cnnlstm backup audit`` (issue 14): a real trail written by app.audit, archived with
checksums, restored elsewhere, and still verifying there."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from app.audit.chain import CHAIN, verify_trail
from app.audit.reader import Query, query_records
from app.audit.writer import AuditTrail
from app.ops import backup as bk
from tests.unit.audit.audit_support import submit_one, trail
from tests.unit.ops.ops_cli import run_cli


def _write(t: AuditTrail, first: int, n: int) -> None:
    for i in range(first, first + n):
        submit_one(t, i, f"req-{i}")
    assert t.flush()


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[list[AuditTrail]]:
    """Two streams (two writers at once, as two gateway replicas on a node), with sealed
    files and unsealed records; the writers stay open (a live trail) until the end."""
    root = tmp_path / "audit"
    live = [trail(root, rotate_bytes=4096), trail(root, rotate_bytes=4096)]
    for w in live:
        w.start()
    _write(live[0], 0, 40)
    _write(live[1], 100, 25)
    yield live
    for w in live:
        w.stop()


@pytest.fixture
def audit_dir(writers: list[AuditTrail]) -> Path:
    """The same trail at rest (its writers stopped), so it can be compared file by file."""
    for w in writers:
        w.stop()
    return writers[0].root


def _trail_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_backup_audit_restores_a_trail_that_verifies(audit_dir: Path, tmp_path: Path) -> None:
    before = verify_trail(audit_dir)
    assert [r.stream for r in before] == ["stream-0", "stream-1"]
    assert all(r.sealed >= 1 and not r.problems for r in before)

    archive = bk.backup_audit(audit_dir, tmp_path / "backups", retention_days=90)
    assert archive.name.startswith("audit-")
    assert Path(f"{archive}.sha256").is_file()
    assert [i.kind for i in bk.list_backups(tmp_path / "backups")] == ["audit"]
    assert [p.name for p in (tmp_path / "backups").iterdir() if p.name.startswith(".")] == []

    restored = bk.restore(archive, tmp_path / "restored" / "audit", kind="audit")
    after = verify_trail(restored)
    assert [r.problems for r in after] == [[], []]
    assert [(r.stream, r.sealed, r.head) for r in after] == [
        (r.stream, r.sealed, r.head) for r in before
    ]
    assert _trail_files(restored) == _trail_files(audit_dir)
    assert not list(restored.rglob(".lock"))  # the writers' locks stay behind
    ids = {r["request_id"] for r in query_records(restored, Query())}
    assert ids == {f"req-{i}" for i in [*range(40), *range(100, 125)]}


def test_an_audit_archive_is_refused_as_another_kind(audit_dir: Path, tmp_path: Path) -> None:
    archive = bk.backup_audit(audit_dir, tmp_path / "backups")
    with pytest.raises(bk.BackupError, match="holds audit, not configs"):
        bk.restore(archive, tmp_path / "elsewhere", kind="configs")
    assert not (tmp_path / "elsewhere").exists()


def test_a_broken_trail_is_not_archived(audit_dir: Path, tmp_path: Path) -> None:
    victim = sorted((audit_dir / "stream-0").glob("*.gz"))[0]
    victim.unlink()
    with pytest.raises(bk.BackupError, match=f"{victim.name} was removed"):
        bk.backup_audit(audit_dir, tmp_path / "backups")
    assert list((tmp_path / "backups").iterdir()) == []  # no archive, no staging left


def test_a_seal_during_the_copy_is_retried(
    writers: list[AuditTrail], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain moving under the copy (a writer sealing files meanwhile) makes that copy
    useless: it is taken again, and the archive holds what was written meanwhile too."""
    from app.ops import audit_snapshot

    real_copy, real_try = audit_snapshot._link_or_copy, audit_snapshot._try_snapshot
    attempts: list[Path] = []
    sealed_meanwhile: list[bool] = []

    def sealing_midway(source: Path, target: Path) -> None:
        if not sealed_meanwhile:
            sealed_meanwhile.append(True)
            chain = writers[0].root / "stream-0" / CHAIN
            before, deadline = chain.read_bytes(), time.monotonic() + 10
            _write(writers[0], 300, 30)  # stream-0 seals while it is being copied
            while chain.read_bytes() == before and time.monotonic() < deadline:
                time.sleep(0.01)
        real_copy(source, target)

    def counting(root: Path, staging: Path) -> list[str]:
        attempts.append(staging)
        return real_try(root, staging)

    monkeypatch.setattr(audit_snapshot, "_link_or_copy", sealing_midway)
    monkeypatch.setattr(audit_snapshot, "_try_snapshot", counting)
    archive = bk.backup_audit(writers[0].root, tmp_path / "backups")
    assert len(attempts) >= 2
    restored = bk.restore(archive, tmp_path / "restored", kind="audit")
    assert all(not r.problems for r in verify_trail(restored))
    ids = {r["request_id"] for r in query_records(restored, Query())}
    assert {f"req-{i}" for i in range(300, 330)} <= ids


@pytest.fixture
def site(audit_dir: Path, tmp_path: Path, clean_env: None) -> Path:
    config = {
        "audit": {"path": str(audit_dir)},
        "config_backup": {"schedule": "0 3 * * *", "retention_days": 90,
                          "storage_path": str(tmp_path / "backups/configs")},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_backup_list_and_restore_audit_through_the_cli(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["--config", str(site), "backup", "audit"]) == 0
    archive = capsys.readouterr().out.split()[0]
    assert Path(archive).parent == tmp_path / "backups/configs"
    assert run_cli(["--config", str(site), "backup", "list", "audit", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["path"], row["has_checksum"]) == ("audit", archive, True)

    assert run_cli(["--config", str(site), "restore", "audit", archive]) == 2
    assert "restore audit needs --target DIR" in capsys.readouterr().err
    target = tmp_path / "restored"
    argv = ["--config", str(site), "restore", "audit", archive, "--target", str(target)]
    assert run_cli([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    reports = verify_trail(target)
    assert len(reports) == 2
    assert all(not r.problems for r in reports)


def test_backup_audit_with_the_trail_off_says_so(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("audit:\n  enabled: false\n")
    assert run_cli(["--config", str(path), "backup", "audit"]) == 2
    assert "the audit trail is off" in capsys.readouterr().err
