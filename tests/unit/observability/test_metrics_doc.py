"""deploy/METRICS.md names exactly the series the code exports.

The gateway's table lists every series of its ``/metrics`` registry (the process, GC and
platform collectors apart, which the page names by prefix), and every series a predictor
replica records through Ray is named in the text, so a metric added, renamed or removed
in the code shows up here before it shows up as an empty panel.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from app.config import Metrics
from app.observability.http_metrics import HttpMetrics
from app.observability.metrics import GatewayMetrics
from app.observability.replica_metrics import exported_names

ROOT = Path(__file__).resolve().parents[3]
METRICS_MD = (ROOT / "deploy" / "METRICS.md").read_text(encoding="utf-8")


def _gateway_table_names(text: str) -> set[str]:
    """The first column of the table that follows the ``GatewayMetrics`` paragraph."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "`GatewayMetrics`" in line)
    names: set[str] = set()
    in_table = False
    for line in lines[start:]:
        if line.startswith("|"):
            in_table = True
            cell = re.match(r"\|\s*`([a-z_]+)`\s*\|", line)
            if cell:
                names.add(cell.group(1))
        elif in_table:
            break
    return names


def _gateway_series() -> set[str]:
    """Every family the gateway registers itself, as Prometheus names it on a scrape."""
    registry = CollectorRegistry()
    GatewayMetrics(registry, Metrics())
    HttpMetrics(registry)
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }


def test_the_gateway_table_lists_every_exported_series_and_no_other() -> None:
    documented = _gateway_table_names(METRICS_MD)
    exported = _gateway_series()
    assert documented - exported == set(), "METRICS.md lists series the gateway does not export"
    assert exported - documented == set(), "the gateway exports series METRICS.md does not list"


def test_every_predictor_replica_series_is_named() -> None:
    for name in exported_names():
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{base}" in METRICS_MD, name


def test_the_table_parser_reads_the_gateway_table() -> None:
    text = "Gateway (`GatewayMetrics`):\n\n| Name | Type |\n|---|---|\n| `a_total` | x |\n\nnext\n"
    assert _gateway_table_names(text) == {"a_total"}
