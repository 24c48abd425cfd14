"""Conventions of the alert rules (monitoring/rules/) that promtool does not check: labels,
annotations, a runbook section per alert, and a promtool unit test that makes each alert
fire and one that keeps it quiet. The unit tests themselves run with `make test-rules`."""

from __future__ import annotations

import re

import yaml
from promql import MONITORING, ROOT, RULES, rules

RUNBOOK = (ROOT / "docs" / "operations.md").read_text()
TESTS = {p.name: yaml.safe_load(p.read_text()) for p in (MONITORING / "tests").glob("*.yml")}


def alerts() -> list[dict]:
    return [rule for _, rule in rules() if "alert" in rule]


def test_one_test_file_per_rules_file():
    assert RULES, "no rules in monitoring/rules/"
    assert {p.name for p in RULES} == set(TESTS)
    for path in RULES:
        assert TESTS[path.name]["rule_files"] == [f"../rules/{path.name}"]


def test_every_alert_is_labelled_and_annotated():
    assert len({a["alert"] for a in alerts()}) >= 20
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"Rvm[A-Z][A-Za-z]+", name), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        annotations = alert["annotations"]
        assert "{{ $labels.device }}" in annotations["summary"], name
        assert "{{ $labels.device }}" in annotations["description"], name
        assert annotations["runbook_url"] == (
            "{{ $externalLabels.runbook_base }}#" + name.lower()
        ), name


def test_every_alert_has_a_runbook_section():
    for name in {a["alert"] for a in alerts()}:
        section = re.search(rf"^### {name}\n(.*?)(?=^##|\Z)", RUNBOOK, re.MULTILINE | re.DOTALL)
        assert section, f"docs/operations.md has no '### {name}'"
        assert "- **Means:**" in section.group(1), name
        assert re.search(r"^- \*\*(Check / fix|Fix):\*\*", section.group(1), re.MULTILINE), name


def test_every_alert_is_tested_firing_and_quiet():
    fires, quiet = set(), set()
    for test_file in TESTS.values():
        for group in test_file["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
                for exp in case.get("exp_alerts") or []:
                    assert "device" in exp["exp_labels"], case
                    assert exp["exp_annotations"]["runbook_url"].endswith(
                        "#" + case["alertname"].lower()
                    )
    names = {a["alert"] for a in alerts()}
    assert names <= fires, f"never tested firing: {names - fires}"
    assert names <= quiet, f"never tested quiet: {names - quiet}"
