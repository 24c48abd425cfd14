"""execution-environment.yml, the image definition for AWX / Ansible Automation Platform:
valid for ansible-builder 3 (its own schema and checks, since no container builds run on
these machines), and pinned to exactly what the repository's controller runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import ansible_collections
import pytest
import yaml
from ansible_builder.exceptions import DefinitionError
from ansible_builder.user_definition import UserDefinition

ROOT = Path(__file__).resolve().parents[2]
EE = ROOT / "execution-environment.yml"


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), re.MULTILINE)
    return {name.lower(): version for name, version in found}


def test_the_definition_is_valid_for_ansible_builder():
    definition = UserDefinition(str(EE))
    definition.validate()  # the schema, and that the files it names exist
    assert definition.version == 3


def test_it_pins_what_the_controller_runs():
    ee = yaml.safe_load(EE.read_text())
    controller = pins(ROOT / "requirements.txt")
    core = ee["dependencies"]["ansible_core"]["package_pip"]
    assert core == f"ansible-core=={controller['ansible-core']}"
    for name, version in pins(ROOT / ee["dependencies"]["python"]).items():
        assert controller.get(name) == version, f"{name}: {version} vs requirements.txt"
    # The collections at the versions the controller's `ansible` package bundles.
    bundled = Path(next(iter(ansible_collections.__path__)))
    for c in yaml.safe_load((ROOT / ee["dependencies"]["galaxy"]).read_text())["collections"]:
        manifest = bundled / c["name"].replace(".", "/") / "MANIFEST.json"
        assert json.loads(manifest.read_text())["collection_info"]["version"] == c["version"]


def test_every_collection_the_roles_use_is_in_it():
    used = set()
    for task_file in (ROOT / "roles").glob("*/tasks/*.yml"):
        used |= set(
            re.findall(r"^\s*-?\s*([a-z_]+\.[a-z_]+)\.[a-z_]+:", task_file.read_text(), re.M)
        )
    used -= {"ansible.builtin"}
    ee = yaml.safe_load(EE.read_text())
    listed = yaml.safe_load((ROOT / ee["dependencies"]["galaxy"]).read_text())["collections"]
    assert used <= {c["name"] for c in listed}, used


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=9), "version"),
        (lambda d: d["dependencies"].update(galaxy="ee/missing.yml"), "missing.yml"),
        (lambda d: d.update(build_arg_defaults={"EE_BASE_IMAGE": "x"}), "EE_BASE_IMAGE"),
    ],
)
def test_a_broken_definition_is_refused(tmp_path, change, message):
    shutil.copytree(ROOT / "ee", tmp_path / "ee")
    data = yaml.safe_load(EE.read_text())
    change(data)
    broken = tmp_path / "execution-environment.yml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(DefinitionError, match=message):
        UserDefinition(str(broken)).validate()
