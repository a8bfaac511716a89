"""``cnnlstm audit query|verify``: read and check the prediction audit trail.

Both read the directory the configuration names (``audit.path``, else
``<logging.directory>/audit``) on this machine; they never write to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.audit import audit_root
from app.audit.chain import verify_trail
from app.audit.reader import Query, TrailChanging, query_records
from app.audit.records import parse_ts
from app.config.env import load_service_config


def _root(args: argparse.Namespace) -> Path | None:
    _, config = load_service_config(args.config)
    root = audit_root(config)
    if root is None:
        print(
            "the audit trail is off: set audit.path (or logging.directory) in the config",
            file=sys.stderr,
        )
    return root


def _time(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    try:
        return parse_ts(text)
    except ValueError:
        raise SystemExit(f"{what}: not an ISO 8601 time: {text!r}") from None


def _query(args: argparse.Namespace) -> int:
    root = _root(args)
    if root is None:
        return 2
    query = Query(
        since=_time(args.since, "--since"),
        until=_time(args.until, "--until"),
        request_id=args.request_id,
        model_version=args.model_version,
    )
    try:
        records = query_records(root, query)
    except TrailChanging as exc:
        print(f"audit query: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        model, out = r["model"], r["outputs"]
        print(
            f"{r['ts']} {r['request_id'] or '-'}#{r['item']} {r['principal'] or '-'} "
            f"{model['name']}:{model['version']} {r['served_by']} {r['symbol']} "
            f"ret={out['expected_return']:.6g} p_up={out['prob_up']:.4f} "
            f"in={r['input_sha256'][:16]} {r['latency_ms']}ms"
        )
    print(f"{len(records)} record(s)", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    root = _root(args)
    if root is None:
        return 2
    reports = verify_trail(root)
    if args.json:
        print(json.dumps([vars(r) for r in reports], indent=2))
    for report in reports:
        where = root / report.stream
        for note in report.notes:
            print(f"{where}: note: {note}", file=sys.stderr)
        for problem in report.problems:
            print(f"{where}: BROKEN: {problem}", file=sys.stderr)
        if not report.problems and not args.json:
            print(
                f"{where}: ok, {report.sealed} sealed file(s), {report.retired} retired, "
                f"chain head {report.head}"
            )
    if not reports:
        print(f"{root}: no audit streams yet", file=sys.stderr)
    broken = [r.stream for r in reports if r.problems]
    if broken:
        print(f"audit chain BROKEN in {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="the prediction audit trail (query, verify)",
        description="Read the audit trail under the configured audit.path on this machine.",
    )
    asub = audit.add_subparsers(dest="audit_command", required=True)
    query = asub.add_parser("query", help="records by time, request id or model version")
    query.add_argument("--since", metavar="ISO", help="from this time (naive means UTC)")
    query.add_argument("--until", metavar="ISO", help="up to this time, inclusive")
    query.add_argument("--request-id", metavar="ID")
    query.add_argument("--model-version", metavar="V")
    query.add_argument("--json", action="store_true", help="one JSON array on stdout")
    query.set_defaults(func=_query)
    verify = asub.add_parser(
        "verify", help="check every sealed file against the chain (exit 1 when broken)"
    )
    verify.add_argument("--json", action="store_true", help="the per-stream reports as JSON")
    verify.set_defaults(func=_verify)
