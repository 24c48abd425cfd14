#!/usr/bin/env python3
"""Check that every role's defaults/main.yml and meta/argument_specs.yml agree.

Each role variable's default is written twice, in `defaults/main.yml` and as `default:` in
`meta/argument_specs.yml`, and this check keeps the two equal. Both are needed: on
ansible-core 2.19 (checked with 2.19.14) the spec's `default:` is documentation only. A
role whose variable had a spec default but no entry in defaults/main.yml saw it undefined
in every way a role runs: `roles:`, `import_role`, `include_role`, `tasks_from:` another
entry point (whose own spec default did not apply either), and a `--tags` run; when
defaults/main.yml had another value, the role got that value, never the spec's. The
validation only checks types and choices of the values it is given. So
defaults/main.yml gives the values and the spec documents them, and neither may drift.

A role's defaults are shared with the other roles of a play (`roles:` and
`import_role`), but not across plays and not with `include_role`. A default that names
the same thing as another role's variable is therefore derived as
`{{ other_role_var | default(<literal>) }}`, where the literal is what the other role
defaults to; this check fails when that literal differs from the other role's default.

Fails (exit 1), one line per problem naming the role, the variable and what differs, when
  - a key is in defaults/main.yml but not in the main entry point's options,
  - an option (of any entry point) that is not `required` has no `default:`,
  - an option with a default is missing from defaults/main.yml (the spec's default would
    never apply),
  - defaults/main.yml and the spec give different values (parsed YAML, compared strictly:
    3 and "3" differ),
  - an option appears in two entry points with different defaults,
  - a `required` option has a default,
  - a `| default(<literal>)` fallback for another role's variable differs from that
    role's default (in role defaults and in the inventories' group_vars).

Options of list elements (`options:` below an option) describe items, not variables,
and are not checked.

Usage: scripts/check_role_specs.py [--repo DIR] [ROLE_DIR ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
ROLE_PARENTS = ("roles", "lab/roles")
_MISSING = object()
# `name | default(<literal>)` inside a Jinja expression; the literal is YAML-parsed.
_FALLBACK = re.compile(r"\b([a-z][a-z0-9_]*)\s*\|\s*default\(\s*('[^']*'|\"[^\"]*\"|[^()]*?)\s*\)")


def find_roles(repo: Path) -> list[Path]:
    roles: list[Path] = []
    for parent in ROLE_PARENTS:
        base = repo / parent
        if base.is_dir():
            roles += sorted(
                p for p in base.iterdir() if (p / "meta" / "argument_specs.yml").is_file()
            )
    return roles


def role_label(role: Path, repo: Path) -> str:
    try:
        return str(role.resolve().relative_to(repo.resolve()))
    except ValueError:
        return str(role)


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_role(role: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(defaults/main.yml, argument_specs) of a role; missing files are empty."""
    defaults_file = role / "defaults" / "main.yml"
    defaults = (load_yaml(defaults_file) or {}) if defaults_file.is_file() else {}
    specs = (load_yaml(role / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}
    return defaults, specs


def show(value: Any) -> str:
    """A value as YAML flow text, one line (strings quoted only where YAML needs it)."""
    if value is _MISSING:
        return "nothing"
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False)
    return text.strip().removesuffix("...").strip()


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, recursively (1 == True and 3 == 3.0 do not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_role(role: Path, repo: Path) -> list[str]:
    label = role_label(role, repo)
    try:
        defaults, specs = load_role(role)
    except (OSError, yaml.YAMLError) as e:
        return [f"{label}: cannot read the role's YAML: {e}"]
    errors: list[str] = []
    if "main" not in specs:
        errors.append(f"{label}: meta/argument_specs.yml has no main entry point")
    main_options = (specs.get("main") or {}).get("options") or {}
    for name in defaults:
        if name not in main_options:
            errors.append(
                f"{label}: {name}: in defaults/main.yml but not an option of the main entry "
                "point in meta/argument_specs.yml (type and describe it there)"
            )
    first_seen: dict[str, tuple[str, Any]] = {}
    for entry, spec in specs.items():
        for name, option in ((spec or {}).get("options") or {}).items():
            option = option or {}
            where = f"entry point {entry}" if entry != "main" else "meta/argument_specs.yml"
            spec_default = option.get("default", _MISSING)
            if option.get("required"):
                if spec_default is not _MISSING:
                    errors.append(f"{label}: {name}: required in {where} but has a default")
                if name in defaults:
                    errors.append(
                        f"{label}: {name}: required in {where} but defaults/main.yml has "
                        f"{show(defaults[name])}"
                    )
                continue
            if spec_default is _MISSING:
                errors.append(
                    f"{label}: {name}: {where} gives no default and the option is not "
                    "required (add default:, the value defaults/main.yml has)"
                )
            elif name not in defaults:
                errors.append(
                    f"{label}: {name}: {where} has default {show(spec_default)}, "
                    "defaults/main.yml has nothing (the spec's default never applies)"
                )
            elif not same(defaults[name], spec_default):
                errors.append(
                    f"{label}: {name}: defaults/main.yml has {show(defaults[name])}, "
                    f"{where} has {show(spec_default)}"
                )
            if name in first_seen:
                other, other_default = first_seen[name]
                if not same(other_default, spec_default):
                    errors.append(
                        f"{label}: {name}: entry point {other} has default {show(other_default)}, "
                        f"entry point {entry} has {show(spec_default)}"
                    )
            else:
                first_seen[name] = (entry, spec_default)
    return errors


def _is_literal(text: str) -> bool:
    """A constant (string, number, list, dict, bool), not a Jinja name or expression."""
    text = text.strip()
    return bool(text) and (
        text[0] in "'\"[{-" or text[0].isdigit() or text.lower() in ("true", "false", "none")
    )


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def check_fallbacks(repo: Path, roles: list[Path]) -> list[str]:
    """`other_var | default(literal)`: the literal must be other_var's role default."""
    owner_defaults: dict[str, tuple[str, Any]] = {}
    for role in find_roles(repo):
        try:
            defaults, _ = load_role(role)
        except (OSError, yaml.YAMLError):
            continue
        for name, value in defaults.items():
            owner_defaults[name] = (role_label(role, repo), value)
    sources: list[tuple[str, str, dict[str, Any]]] = []
    for role in roles:
        try:
            defaults, _ = load_role(role)
        except (OSError, yaml.YAMLError):
            continue
        sources.append((role_label(role, repo), role_label(role, repo), defaults))
    for path in sorted((repo / "inventories").glob("*/group_vars/**/*.yml")):
        try:
            data = load_yaml(path)
        except (OSError, yaml.YAMLError):
            continue  # ansible-lint and the syntax checks report a broken inventory
        if isinstance(data, dict):
            sources.append((role_label(path, repo), "", data))
    errors: list[str] = []
    for label, own_role, data in sources:
        for key, text in _strings(data, ""):
            for var, literal in _FALLBACK.findall(text):
                if var not in owner_defaults:
                    continue
                owner, expected = owner_defaults[var]
                if owner == own_role:
                    continue
                if not _is_literal(literal):
                    continue  # derived from another variable, nothing to compare
                try:
                    got = yaml.safe_load(literal)
                except yaml.YAMLError:
                    continue
                if not same(got, expected):
                    errors.append(
                        f"{label}: {key}: falls back to {show(got)} for {var}, but "
                        f"{owner}/defaults/main.yml has {show(expected)}"
                    )
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="repository root")
    parser.add_argument("roles", nargs="*", type=Path, help="role directories (default: all)")
    args = parser.parse_args(argv)
    repo: Path = args.repo
    roles = [r if r.is_absolute() else repo / r for r in args.roles] or find_roles(repo)
    if not roles:
        print(f"no roles with meta/argument_specs.yml under {repo}", file=sys.stderr)
        return 1
    errors: list[str] = []
    if not args.roles:
        for parent in ROLE_PARENTS:
            for role in sorted((repo / parent).glob("*/tasks")):
                if not (role.parent / "meta" / "argument_specs.yml").is_file():
                    errors.append(
                        f"{role_label(role.parent, repo)}: no meta/argument_specs.yml "
                        "(every role types and documents its variables there)"
                    )
    options = 0
    for role in roles:
        errors += check_role(role, repo)
        try:
            _, specs = load_role(role)
        except (OSError, yaml.YAMLError):
            continue
        options += sum(len((s or {}).get("options") or {}) for s in specs.values())
    errors += check_fallbacks(repo, roles)
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        print(f"check_role_specs: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"check_role_specs: OK, {len(roles)} roles, {options} options: defaults/main.yml "
        "and meta/argument_specs.yml agree"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
