"""Reading the YAML configuration file into a validated `Config`.

Every problem is reported as `FILE:LINE: key.path: what is wrong (what is
allowed)`, all problems at once, so an operator fixes a file in one pass.
Lines come from PyYAML's node tree (the composer keeps each key's position);
a missing key is reported at the line of its parent section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rvm_detector.config import Config
from rvm_detector.model_manifest import manifest_problems

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists one line per fault."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid configuration {path}:\n  " + "\n  ".join(problems))


def _key_lines(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], dups: list[tuple[int, str]]
) -> None:
    """Record the 1-based line of every key path below `node`, and duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dotted = ".".join(str(p) for p in (*loc, key))
                dups.append(
                    (
                        key_node.start_mark.line + 1,
                        f"{dotted}: duplicate key (YAML keeps only the last one; remove the other)",
                    )
                )
            seen.add(key)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _key_lines(value_node, (*loc, key), lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _key_lines(item, (*loc, i), lines, dups)


def _line_for(loc: Loc, lines: dict[Loc, int]) -> int | None:
    # A missing key has no line of its own: use its closest ancestor's.
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at key path `loc`."""
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _describe(err: dict[str, Any]) -> str:
    loc: Loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "none"
        return f"unknown key; allowed here: {allowed}"
    if kind == "missing":
        field_info = None
        parent = _model_at(loc[:-1])
        if parent is not None:
            field_info = parent.model_fields.get(str(loc[-1]))
        hint = f" ({field_info.description})" if field_info and field_info.description else ""
        return f"required key is missing{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind.endswith("_type") or kind.startswith(("less", "greater", "literal", "string_")):
        return f"{msg} (got {err.get('input')!r})"
    return msg


def _dotted(loc: Loc) -> str:
    # Union members show up as extra loc parts (e.g. 'int', 'str'): leave them out.
    keys = [str(p) for p in loc if not (isinstance(p, str) and p in {"int", "str", "float"})]
    return ".".join(keys) or "(top level)"


def parse_config(text: str, path: Path) -> Config:
    """Validate YAML `text` (read from `path`, used in messages) into a Config."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(path, [f"{where}: YAML syntax error: {e.problem or e}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            path,
            [
                f"{path}: the file must be a YAML mapping with sections camera, model, "
                f"platform, spool (got {type(data).__name__})"
            ],
        )
    lines: dict[Loc, int] = {}
    dups: list[tuple[int, str]] = []
    if root is not None:
        _key_lines(root, (), lines, dups)
    problems = [f"{path}:{line}: {msg}" for line, msg in dups]
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_for(loc, lines)
            where = f"{path}:{line}" if line else str(path)
            problems.append(f"{where}: {_dotted(loc)}: {_describe(err)}")
        raise ConfigError(path, problems) from None
    # The model's manifest (when it has one) must carry its accuracy and fit the verdict.
    for problem in manifest_problems(config.model.path, config.verdict.accept):
        key = ("verdict", "accept") if problem.startswith("verdict.") else ("model", "path")
        line = _line_for(key, lines) or _line_for(("model", "path"), lines)
        where = f"{path}:{line}" if line else str(path)
        label = "" if problem.startswith("verdict.") else "model.path: "
        problems.append(f"{where}: {label}{problem}")
    if problems:
        raise ConfigError(path, problems)
    return config


def load_config(path: Path) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(Path(path), [f"{path}: cannot read the file: {e}"]) from None
    return parse_config(text, Path(path))
