"""The Prometheus and Alertmanager files pass their own tools' checks and unit tests.

Locally the binaries may be missing (Debian packages ``prometheus`` and
``prometheus-alertmanager``): the tests skip, saying so. In CI (``CI`` set) a missing
binary is a failure, because CI installs them and a silent skip would hide broken rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.config import ServiceConfig

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(f"{message}; CI runs this check")
    return path


def run(*argv: str) -> str:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-cluster.yml"])
def test_prometheus_config_is_valid(config: str) -> None:
    output = run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus" / config))
    assert "SUCCESS" in output


def test_alert_rules_are_valid_and_lint_clean() -> None:
    output = run(tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert "SUCCESS" in output


def test_alert_rule_unit_tests_pass() -> None:
    output = run(tool("promtool"), "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))
    assert "SUCCESS" in output


# The dashboard's Grafana variables, each replaced by a value PromQL parses in its place.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$model_version": "v1"}


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    # Grafana shows a query that does not parse only as an error on its panel; promtool
    # reads each one as a recording rule and refuses the file on the first that fails.
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text(encoding="utf-8"))
    panels = [dashboard["panels"]]
    exprs = []
    while panels:  # rows nest their panels; each panel's targets hold its queries
        for panel in panels.pop():
            panels.append(panel.get("panels", []))
            exprs += [target["expr"] for target in panel.get("targets", []) if "expr" in target]
    assert len(exprs) > 20
    rules = []
    for index, expr in enumerate(exprs):
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in run(tool("promtool"), "check", "rules", str(path))


def test_alertmanager_config_is_valid() -> None:
    output = run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in output


def test_alertmanager_sends_to_the_configured_webhook() -> None:
    # The service config's monitoring_integration.alerting.webhook_url (spec 11.2).
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    urls = {
        hook["url"]
        for receiver in config["receivers"]
        for hook in receiver.get("webhook_configs", [])
    }
    assert urls == {ServiceConfig().monitoring_integration.alerting.webhook_url}
