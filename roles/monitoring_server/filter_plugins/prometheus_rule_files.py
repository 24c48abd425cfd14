"""Controller-side check of Prometheus rule files, for the role's preflight.

promtool checks every file again on the server before it is installed; this runs first so
a file that is not even YAML stops the run before anything changes, naming the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def _problems(path: str) -> list[str]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        return [f"{path}: cannot be read ({e.strerror})"]
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        return [f"{path}: is not valid YAML{line} ({getattr(e, 'problem', None) or e})"]
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return [f"{path}: has no `groups:` list (a Prometheus rule file starts with groups:)"]
    problems = []
    for i, group in enumerate(doc["groups"]):
        if not isinstance(group, dict) or not group.get("name"):
            problems.append(f"{path}: group {i + 1} has no name")
        elif not isinstance(group.get("rules"), list):
            problems.append(f"{path}: group {group['name']} has no `rules:` list")
    return problems


def prometheus_rule_file_problems(paths: list[str]) -> list[str]:
    """One line per problem, each naming the file; empty when every file looks like rules."""
    return [p for path in paths for p in _problems(str(path))]


class FilterModule:
    def filters(self) -> dict:
        return {"prometheus_rule_file_problems": prometheus_rule_file_problems}
