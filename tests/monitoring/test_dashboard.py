"""The operators' Grafana dashboard (monitoring/dashboards/fleet.json): well-formed, every
panel on the datasource variable with PromQL that parses, and every metric the dashboard
and the alert rules use is one that something exports (or is listed as still to come)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from promql import (
    MONITORING,
    app_metric_names,
    dashboard,
    data_panels,
    exporter_metric_names,
    grafana_to_promql,
    metric_names,
    rules,
    textfile_metric_names,
)

ALLOWLIST = yaml.safe_load((MONITORING / "metrics-allowlist.yml").read_text())


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install the Debian package prometheus (make setup)"
    return path


def check_rules(tmp_path, exprs: dict[str, str]) -> subprocess.CompletedProcess:
    """`promtool check rules` on recording rules made of these expressions: it parses them."""
    rule_file = tmp_path / "dashboard-exprs.yml"
    group = {"name": "dashboard", "rules": [{"record": r, "expr": e} for r, e in exprs.items()]}
    rule_file.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    return subprocess.run(
        [promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )


def dashboard_exprs() -> dict[str, str]:
    return {
        f"dashboard:panel_{panel['id']}:{target['refId']}": grafana_to_promql(target["expr"])
        for panel in data_panels(dashboard())
        for target in panel["targets"]
    }


def test_dashboard_has_a_prometheus_datasource_variable_and_a_device_variable():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["device"]["datasource"]["uid"] == "${datasource}"
    assert variables["device"]["includeAll"] and variables["device"]["multi"]
    assert board["uid"] and board["title"]


def test_every_panel_uses_the_datasource_variable_and_has_targets():
    panels = data_panels(dashboard())
    assert len(panels) >= 20
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], f"{where} has no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{where} target {target['refId']} has no expr"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), where


def test_every_panel_follows_the_device_variable():
    for panel in data_panels(dashboard()):
        for target in panel["targets"]:
            assert 'device=~"$device"' in target["expr"], (panel["title"], target["expr"])


def test_the_overview_panels_the_operators_asked_for_are_there():
    exprs = " ".join(t["expr"] for p in data_panels(dashboard()) for t in p["targets"])
    for needed in (
        "rvm_ready",
        "rvm_build_info",
        "rvm_deposits_total",
        "rvm_spool_depth",
        "rvm_spool_oldest_age_seconds",
        "histogram_quantile(0.5, sum by (device, le) (rate(rvm_inference_seconds_bucket",
        "histogram_quantile(0.95, sum by (device, le) (rate(rvm_inference_seconds_bucket",
        "rvm_camera_up",
        "rvm_jetson_temperature_celsius",
        "rvm_jetson_power_watts",
        "node_filesystem_avail_bytes",
    ):
        assert needed in exprs, needed


def test_every_panel_expression_parses(tmp_path):
    exprs = dashboard_exprs()
    done = check_rules(tmp_path, exprs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_a_broken_expression_is_caught(tmp_path):
    done = check_rules(tmp_path, {"dashboard:broken": "sum by (device (rate(x[5m]))"})
    assert done.returncode != 0


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (device, le) (rate(a_bucket{job="x",le!="1"}[$__rate_interval]))', {"a_bucket"}),
        ('time() - b_seconds{x=~"a|b"} > 26 * 3600', {"b_seconds"}),
        ("c / on (device) group_left (release) d offset 1h > 1e9", {"c", "d"}),
        ("topk(1, count by (release) (e)) or vector(0)", {"e"}),
        ("max_over_time(f[1d:5m]) and g unless h", {"f", "g", "h"}),
    ],
)
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names


def test_every_metric_used_is_exported_or_allowlisted():
    known = app_metric_names() | exporter_metric_names() | textfile_metric_names()
    known |= set(ALLOWLIST["prometheus"])
    known |= {n for names in ALLOWLIST["node_exporter"].values() for n in names}
    known |= set(ALLOWLIST["future"])
    used = {}
    for path, rule in rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, f"{path.name}: {rule.get('alert', rule.get('record'))}")
    for panel in data_panels(dashboard()):
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                used.setdefault(name, f"dashboard panel {panel['title']!r}")
    unknown = {name: where for name, where in used.items() if name not in known}
    assert not unknown, f"metrics nothing exports (nor monitoring/metrics-allowlist.yml): {unknown}"
    assert len(used) > 40


def test_the_exporters_are_really_read():
    app, exporter = app_metric_names(), exporter_metric_names()
    assert {"rvm_ready", "rvm_camera_up", "rvm_inference_seconds_bucket"} <= app
    assert {"rvm_spool_oldest_age_seconds", "rvm_upload_dead_letters_total"} <= app
    assert {"rvm_jetson_temperature_celsius", "rvm_jetson_power_watts"} <= exporter
    assert {"rvm_jetson_nvpmodel_info", "rvm_tegrastats_unknown_fields_total"} <= exporter


def test_future_metrics_are_not_exported_yet():
    # Once the app exports one of them, it is no longer "future": remove it from the list.
    exported = app_metric_names() | exporter_metric_names() | textfile_metric_names()
    assert not set(ALLOWLIST["future"]) & exported
