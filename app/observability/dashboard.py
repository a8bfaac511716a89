"""Which metric names the Grafana dashboard queries, and which names a scrape exposes.

A dashboard panel over a misspelt metric shows "no data" forever and nobody notices until
the incident it was for. Tests compare :func:`dashboard_metric_names` of
``deploy/grafana/dashboard.json`` with :func:`exposed_series_names` of a real ``/metrics``
scrape plus :data:`RAY_METRICS_ALLOWLIST` (names Ray's node exporter serves, which no
gateway process can show).

The PromQL "parser" here only has to find metric names in expressions we write: it drops
strings, label matchers, range selectors, grouping clauses, Grafana variables and function
calls, and keeps the identifiers that remain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.observability.replica_metrics import exported_names

# Verified against Ray 2.60's source:
#   ray/dashboard/modules/reporter/reporter_agent.py METRICS_GAUGES (node_* gauges, tags
#   ip/SessionName/IsHeadNode/RayNodeType, GPU ones also GpuIndex/GpuDeviceName/GpuUuid);
#   ray/serve/_private/deployment_state.py "serve_autoscaling_target_replicas" (tags
#   deployment, application).
# Ray's exporter prefixes every name with "ray_"; the predictor's ReplicaMetrics series
# follow the same rule (exported_names()).
RAY_NODE_METRICS = frozenset(
    {
        "ray_node_cpu_utilization",  # percent of the whole node, 0-100
        "ray_node_cpu_count",
        "ray_node_mem_used",  # bytes
        "ray_node_mem_total",  # bytes
        "ray_node_gpus_utilization",  # percent per GPU
        "ray_node_gram_used",  # bytes per GPU
        "ray_node_gram_available",
    }
)
RAY_SERVE_METRICS = frozenset({"ray_serve_autoscaling_target_replicas"})
RAY_METRICS_ALLOWLIST = RAY_NODE_METRICS | RAY_SERVE_METRICS | frozenset(exported_names())

_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
        "and", "or", "unless", "inf", "nan", "atan2", "start", "end",
    }
)  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]*?)\s*(?:,\s*\w+\s*)?\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by one PromQL expression (or Grafana ``label_values``)."""
    text = _LABEL_VALUES.sub(lambda m: f" {m.group(1)} ", expr)
    text = _STRINGS.sub(" ", text)
    text = _VARIABLES.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text, flags=re.IGNORECASE)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("type") == "datasource":  # a datasource picker: its query is a plugin id
            return
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):  # panels, variables
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield str(value["query"])
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def dashboard_metric_names(path: Path | str) -> set[str]:
    """Every metric name any panel or variable of a Grafana dashboard JSON file queries."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for expr in _expressions(data):
        names |= promql_metric_names(expr)
    return names


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exposed_series_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition declares, with or without samples.

    A labelled metric that has not been observed yet has ``# TYPE`` but no sample lines;
    it still counts, since it appears as soon as traffic arrives.
    """
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
