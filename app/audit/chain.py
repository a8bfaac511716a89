"""The integrity chain of one audit stream, and the check that it still holds.

A stream directory holds ``current.jsonl`` (records not yet sealed), sealed files
``audit-<seq>-<UTC>.jsonl.gz`` and ``chain.jsonl``, one JSON entry per line:

- ``open``: the stream's first entry;
- ``seal``: a file was closed: its name, SHA-256 (of the gzip file as stored),
  ``raw_sha256`` (of the JSON lines inside), record count, first/last record time, and
  ``prev_file_sha256`` (the previous sealed file's digest);
- ``retire``: a sealed file was removed by retention (name, digest, the retention in force).

Every entry carries ``n`` (its index), ``prev`` (the previous entry's ``hash``) and
``hash``: SHA-256 of the entry's canonical JSON (sorted keys, no spaces) without ``hash``.
:func:`verify_stream` walks the chain and the directory: an edited file no longer matches
its digest, a removed one is missing without a ``retire`` entry, an edited or removed
entry breaks the links. Rewriting the chain as well is possible for someone with write
access, which is why each seal also logs the chain head (``audit_file_sealed``): compare
it with the log to catch that.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

CHAIN = "chain.jsonl"
CURRENT = "current.jsonl"
SEALED_RE = re.compile(r"^audit-(\d{6,})-(\d{8}T\d{6}Z)\.jsonl\.gz$")
GENESIS = "0" * 64


def canonical(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_chain(stream: Path) -> tuple[list[dict[str, Any]], bool]:
    """The chain's entries, and whether its last line was torn (a crash mid-append)."""
    path = stream / CHAIN
    if not path.exists():
        return [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines[-1] != b""  # a complete file ends with a newline
    entries = []
    for line in lines[:-1]:
        entries.append(orjson.loads(line))
    return entries, torn


@dataclass
class StreamReport:
    stream: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sealed: int = 0
    retired: int = 0
    head: str = GENESIS


def verify_stream(stream: Path) -> StreamReport:
    """Check one stream directory (read-only)."""
    report = StreamReport(stream.name)
    try:
        entries, torn = read_chain(stream)
    except orjson.JSONDecodeError as exc:
        report.problems.append(f"{CHAIN} has a line that is not JSON ({exc})")
        return report
    if torn:
        report.problems.append(f"{CHAIN} ends in a torn line (crash or edit)")
    live: dict[str, str] = {}  # sealed, not retired: name -> digest
    retired: set[str] = set()
    prev, prev_file = GENESIS, ""
    for i, entry in enumerate(entries):
        where = f"{CHAIN} entry {i}"
        if (
            entry.get("n") != i
            or entry.get("prev") != prev
            or entry.get("hash") != entry_hash(entry)
        ):
            report.problems.append(f"{where}: broken link (an entry was edited or removed)")
            return report
        prev = entry["hash"]
        event, name = entry.get("event"), entry.get("file")
        if event == "seal" and isinstance(name, str):
            if entry.get("prev_file_sha256") != prev_file:
                report.problems.append(f"{where}: prev_file_sha256 does not match the last seal")
            live[name] = prev_file = entry["sha256"]
        elif event == "retire" and isinstance(name, str):
            if live.pop(name, None) != entry.get("sha256"):
                report.problems.append(f"{where}: retires {name}, which is not a live sealed file")
            retired.add(name)
        elif event != "open" or i != 0:
            report.problems.append(f"{where}: unexpected {event!r} entry")
    if entries and entries[0].get("event") != "open":
        report.problems.append(f"{CHAIN} does not start with an 'open' entry")
    report.head, report.sealed, report.retired = prev, len(live), len(retired)
    on_disk = {p.name for p in stream.iterdir() if SEALED_RE.match(p.name)}
    for name in sorted(live):
        path = stream / name
        if name not in on_disk:
            report.problems.append(f"{name} was removed without a retention record")
        elif sha256_file(path) != live[name]:
            report.problems.append(f"{name} does not match its recorded SHA-256 (edited)")
    for name in sorted(on_disk - live.keys()):
        if name in retired:
            report.notes.append(f"{name} is retired but still present (removal interrupted)")
        else:
            report.problems.append(f"{name} is not in the chain")
    if not entries and on_disk:
        report.problems.append(f"{CHAIN} is missing but sealed files are present")
    current = stream / CURRENT
    if current.exists():
        n = current.read_bytes().count(b"\n")
        if n:
            report.notes.append(f"{CURRENT}: {n} records not sealed yet (not in the chain)")
    return report


def streams(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.startswith("stream-")),
        key=lambda p: (len(p.name), p.name),
    )


def verify_trail(root: Path) -> list[StreamReport]:
    return [verify_stream(s) for s in streams(root)]
