"""Helpers for the monitoring tests: the PromQL of the rules and the dashboard, the metric
names in it, and the metric names the app and the tegrastats exporter really export."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
RULES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARD = MONITORING / "dashboards" / "fleet.json"
FIXTURES = ROOT / "app" / "tests" / "fixtures" / "tegrastats"

# Grafana's variables, replaced by something Prometheus accepts in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
GRAFANA_VARIABLES["$device"] = ".*"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan", "atan2"}
_STRIP = [
    (re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''), '""'),  # strings
    (re.compile(r"\{[^}]*\}"), ""),  # label matchers
    (re.compile(r"\[[^\]]*\]"), ""),  # ranges and subqueries
    (re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"), ""),
]
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    for pattern, replacement in _STRIP:
        expr = pattern.sub(replacement, expr)
    return {name for name in _IDENT.findall(expr) if name.lower() not in _KEYWORDS}


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def rules() -> list[tuple[Path, dict]]:
    return [
        (path, rule)
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def data_panels(board: dict) -> list[dict]:
    """Every panel that shows data (rows are only headings), nested ones included."""
    out = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out += [p for p in panel.get("panels", []) if p["type"] != "row"]
        else:
            out.append(panel)
    return out


def _sample_names(family_name: str, kind: str) -> set[str]:
    return {
        "counter": {f"{family_name}_total"},
        "histogram": {f"{family_name}_{s}" for s in ("bucket", "sum", "count")},
        "summary": {family_name, f"{family_name}_sum", f"{family_name}_count"},
        "info": {f"{family_name}_info"},
    }.get(kind, {family_name})


def app_metric_names() -> set[str]:
    """What the detector's /metrics can hold: every family on its registry, by type."""
    src = ROOT / "app" / "src" / "rvm_detector"
    for module in sorted(src.glob("*.py")):
        if "registry=REGISTRY" in module.read_text():
            importlib.import_module(f"rvm_detector.{module.stem}")
    from rvm_detector.metrics import REGISTRY

    return {n for fam in REGISTRY.collect() for n in _sample_names(fam.name, fam.type)}


def exporter_metric_names() -> set[str]:
    """What rvm-tegrastats-exporter exports for the real tegrastats lines of its fixtures."""
    from prometheus_client.parser import text_string_to_metric_families
    from rvm_detector.tegrastats import Exporter

    names: set[str] = set()
    for fixture in sorted(FIXTURES.glob("*.txt")):
        exporter = Exporter(stale_after=None)
        for line in fixture.read_text().splitlines():
            exporter.feed(line)
        exporter.collector.set_nvpmodel(("0", "15W"))
        text = exporter.exposition().decode()
        names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names


def _load_script(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def textfile_metric_names() -> set[str]:
    """What the roles write to the node exporter's textfile directory, from their scripts'
    own rendering (roles/backup, roles/backup_server, roles/pull_mode)."""
    from prometheus_client.parser import text_string_to_metric_families

    device = _load_script(ROOT / "roles" / "backup" / "files" / "rvm_backup.py")
    server = _load_script(ROOT / "roles" / "backup_server" / "files" / "rvm_backup_maint.py")
    pull = _load_script(ROOT / "roles" / "pull_mode" / "files" / "rvm_pull.py")
    text = device.render_metrics({}, True, 0.0, 1.0)
    for action in ("prune", "check"):
        text += "\n".join(server.series(action, "d1", True, 1.0, 3, 1024)) + "\n"
    text += pull.render_metrics({}, 0.0)
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}
