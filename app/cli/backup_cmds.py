"""``cnnlstm backup models|configs|audit|list|schedule`` and ``cnnlstm restore``.

Backups run with the environment applied (``MODEL_REGISTRY_PATH`` wins, as everywhere at
run time); the archive format and the checks are :mod:`app.ops.backup`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.audit import audit_root
from app.config import Backup, ServiceConfig
from app.config.env import Settings, load_service_config
from app.ops import backup as bk
from app.ops.archive import Kind

KINDS: tuple[Kind, ...] = ("models", "configs", "audit")
HEARTBEAT = Path("/tmp/cnnlstm-backup.heartbeat")  # noqa: S108 - container-local marker


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _config_files(args: argparse.Namespace, config: ServiceConfig) -> list[Path]:
    path = args.config or Settings().CNNLSTM_CONFIG
    files = [Path(path)] if path else []
    return files + list(config.config_backup.paths) + [Path(p) for p in args.paths or []]


def _key_files(config: ServiceConfig) -> list[Path]:
    """The secrets a config backup never holds: they belong in a secret store."""
    return [
        config.security.authentication.jwt_secret_path,
        config.network_security.tls.key_path,
    ]


def _under_any(path: Path, sources: list[Path]) -> bool:
    """Whether a backup of ``sources`` would have taken ``path``."""
    if not path.is_file():
        return False
    real = path.resolve()
    return any(real.is_relative_to(s.resolve()) for s in sources)


def _section(config: ServiceConfig, kind: str) -> Backup:
    """Where a kind's archives go: the audit trail's beside the configuration's."""
    return config.model_backup if kind == "models" else config.config_backup


def _backup(args: argparse.Namespace) -> int:
    _, config = load_service_config(args.config)
    section = _section(config, args.what)
    storage, retention = section.storage_path, section.retention_days
    left_out: list[Path] = []
    try:
        if args.what == "models":
            root = Path(args.registry) if args.registry else config.model_registry.path
            source = [root]
            archive = bk.backup_models(root, storage, retention_days=retention)
        elif args.what == "audit":
            trail = audit_root(config)
            if trail is None:
                print("nothing to back up: the audit trail is off", file=sys.stderr)
                return 2
            source = [trail]
            archive = bk.backup_audit(trail, storage, retention_days=retention)
        else:
            source = _config_files(args, config)
            if not source:
                print("nothing to back up: pass --config or list config_backup.paths")
                return 2
            keys = _key_files(config)
            archive = bk.backup_configs(source, storage, retention_days=retention, secrets=keys)
            left_out = [k for k in keys if _under_any(k, source)]
    except (bk.BackupError, OSError) as exc:
        print(f"backup {args.what} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{archive}  ({len(source)} source(s))")
    if left_out:
        print(f"left out {len(left_out)} key file(s): {', '.join(map(str, left_out))}")
    return 0


def _list(args: argparse.Namespace) -> int:
    _, config = load_service_config(args.config)
    rows: list[dict[str, object]] = []
    for kind in KINDS:
        if args.kind not in (None, kind):
            continue
        for info in bk.list_backups(_section(config, kind).storage_path, kind):
            created = info.created.isoformat()
            if args.json:
                rows.append(
                    {
                        "kind": kind,
                        "created": created,
                        "size": info.size,
                        "has_checksum": info.has_checksum,
                        "path": str(info.path),
                    }
                )
                continue
            mark = "ok " if info.has_checksum else "NO-CHECKSUM"
            print(f"{kind:8} {created}  {info.size:>12}  {mark}  {info.path}")
    if args.json:
        _print_json(rows)
    return 0


def _restore(args: argparse.Namespace) -> int:
    _, config = load_service_config(args.config)
    target = args.target or (str(config.model_registry.path) if args.what == "models" else None)
    report: dict[str, object] = {"kind": args.what, "archive": args.archive, "target": target}
    if target is None:
        message = f"restore {args.what} needs --target DIR (it replaces that directory)"
        if args.json:
            _print_json({**report, "ok": False, "error": message})
        print(message, file=sys.stderr)
        return 2
    try:
        restored = bk.restore(Path(args.archive), Path(target), kind=args.what)
    except (bk.BackupError, OSError) as exc:
        if args.json:
            _print_json({**report, "ok": False, "error": str(exc)})
        print(f"restore failed, {target} untouched: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({**report, "ok": True, "target": str(restored)})
    else:
        print(f"restored {args.archive} into {restored}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from app.ops.scheduler import Job, parse_cron, run_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    _, config = load_service_config(args.config)

    def run(what: str) -> int:
        return _backup(argparse.Namespace(**{**vars(args), "what": what}))

    # Each schedule in its own section's zone, as the CronJobs read them.
    jobs = [
        Job(
            "backup-models",
            args.models_cron or config.model_backup.schedule,
            lambda: run("models"),
            timezone=config.model_backup.timezone,
        ),
        Job(
            "backup-configs",
            args.configs_cron or config.config_backup.schedule,
            lambda: run("configs"),
            timezone=config.config_backup.timezone,
        ),
    ]
    enabled = {
        "backup-models": config.model_backup.enabled,
        "backup-configs": config.config_backup.enabled,
    }
    jobs = [j for j in jobs if enabled[j.name]]
    try:  # a typo in a schedule or zone is a message and exit 2, never a traceback
        for job in jobs:
            parse_cron(job.cron)
            ZoneInfo(job.timezone or "UTC")
    except (ValueError, ZoneInfoNotFoundError) as exc:
        print(f"backup schedule: {job.name}: {exc}", file=sys.stderr)
        return 2
    run_forever(jobs, heartbeat=Path(args.heartbeat))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    backup = sub.add_parser(
        "backup", help="spec 10 backups (models, configs) and the audit trail, list, schedule"
    )
    b_sub = backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    models = b_sub.add_parser("models", help="archive the model registry")
    models.add_argument("--registry", default=None)
    models.set_defaults(func=_backup, what="models")
    configs = b_sub.add_parser("configs", help="archive the config file and config_backup.paths")
    configs.add_argument("paths", nargs="*", help="more files or folders to include")
    configs.set_defaults(func=_backup, what="configs")
    audit = b_sub.add_parser(
        "audit", help="archive the prediction audit trail (a copy that verifies)"
    )
    audit.set_defaults(func=_backup, what="audit")
    listing = b_sub.add_parser("list", help="list archives")
    listing.add_argument("kind", nargs="?", choices=KINDS, default=None)
    listing.add_argument("--json", action="store_true", help="a JSON list on stdout")
    listing.set_defaults(func=_list)
    sched = b_sub.add_parser("schedule", help="run both backups on their cron schedules")
    sched.add_argument("--models-cron", default=None)
    sched.add_argument("--configs-cron", default=None)
    sched.add_argument("--heartbeat", default=str(HEARTBEAT))
    sched.set_defaults(func=_schedule, registry=None, paths=[])

    restore = sub.add_parser("restore", help="verify an archive, then restore it")
    restore.add_argument("what", choices=KINDS)
    restore.add_argument("archive")
    restore.add_argument(
        "--target", default=None, help="default: the registry (models); required otherwise"
    )
    restore.add_argument("--json", action="store_true", help="one JSON report on stdout")
    restore.set_defaults(func=_restore)
