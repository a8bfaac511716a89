"""Reading the trail back: every stream's sealed files and its unsealed current file."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.audit.chain import CHAIN, CURRENT, SEALED_RE, read_chain, streams

ATTEMPTS = 5  # reads of one stream before giving up on a consistent one


@dataclass(frozen=True)
class Query:
    since: str | None = None  # record time format (app.audit.records.parse_ts)
    until: str | None = None  # inclusive
    request_id: str | None = None
    model_version: str | None = None

    def overlaps(self, first_ts: str, last_ts: str) -> bool:
        return not (
            (self.since is not None and last_ts < self.since)
            or (self.until is not None and first_ts > self.until)
        )

    def matches(self, record: dict[str, Any]) -> bool:
        ts = record.get("ts", "")
        return (
            (self.since is None or ts >= self.since)
            and (self.until is None or ts <= self.until)
            and (self.request_id is None or record.get("request_id") == self.request_id)
            and (
                self.model_version is None
                or record.get("model", {}).get("version") == self.model_version
            )
        )


def _files(stream: Path, query: Query) -> Iterator[Path]:
    try:
        ranges = {
            e["file"]: (e["first_ts"], e["last_ts"])
            for e in read_chain(stream)[0]
            if e.get("event") == "seal"
        }
    except (ValueError, KeyError):  # a broken chain is verify's business; still read
        ranges = {}
    sealed = sorted(
        (p for p in stream.iterdir() if SEALED_RE.match(p.name)),
        key=lambda p: int(SEALED_RE.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    for path in sealed:
        span = ranges.get(path.name)
        if span is None or query.overlaps(*span):
            yield path
    if (stream / CURRENT).exists():
        yield stream / CURRENT


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line in f:
            if line.endswith(b"\n"):  # a torn last line is a write still in progress
                yield line


class TrailChanging(RuntimeError):
    """A stream was sealed or retired into every time it was read."""


def _chain_size(stream: Path) -> int:
    try:
        return (stream / CHAIN).stat().st_size
    except FileNotFoundError:
        return 0


def _stream_records(stream: Path, query: Query) -> list[dict[str, Any]]:
    """Matching records of one stream, read again when the writer sealed or retired a file
    meanwhile (its chain grew): files listed before a seal miss the records it moved out of
    ``current.jsonl``, and a file may vanish while being read."""
    for _ in range(ATTEMPTS):
        before = _chain_size(stream)
        try:
            found = []
            for path in _files(stream, query):
                for line in _lines(path):
                    record = orjson.loads(line)
                    if query.matches(record):
                        found.append(record)
        except FileNotFoundError:
            continue
        if _chain_size(stream) == before:
            return found
    raise TrailChanging(f"{stream.name} changed each of {ATTEMPTS} times it was read; retry")


def query_records(root: Path, query: Query) -> list[dict[str, Any]]:
    """Matching records of every stream under ``root``, oldest first."""
    found = []
    for stream in streams(root):
        found += _stream_records(stream, query)
    found.sort(key=lambda r: (r.get("ts", ""), r.get("request_id", ""), r.get("item", 0)))
    return found
