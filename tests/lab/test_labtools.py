"""lab/labtools.py reads both inventories the tests meet: rvmlab.py's and Molecule's."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
from labtools import LabHosts

CONNECTION = {"ansible_host": "10.213.3.11", "ansible_user": "root"}


def test_groups_and_key_from_rvmlabs_inventory(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "jetson": {"hosts": {"dev-1": CONNECTION}},
                        "monitoring": {"hosts": {"mon": {"ansible_host": "10.213.3.12"}}},
                    },
                    "vars": {"ansible_ssh_private_key_file": "/var/lib/rvm-lab/labs/x/id_ed25519"},
                }
            }
        )
    )
    hosts = LabHosts(inventory)
    assert hosts.groups["jetson"] == ["dev-1"] and hosts.groups["monitoring"] == ["mon"]
    assert hosts.groups["all"] == ["dev-1", "mon"]
    assert hosts.secrets_dir("mon") == Path("/var/lib/rvm-lab/labs/x/secrets")


def test_groups_and_key_from_molecules_inventory(tmp_path: Path) -> None:
    # Molecule writes every group at the top level, beside `all`, with the connection
    # options (ansible_private_key_file) repeated on each host.
    options = {**CONNECTION, "ansible_private_key_file": "/var/lib/rvm-lab/labs/m/id_ed25519"}
    inventory = tmp_path / "ansible_inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {"hosts": {"dev-1": options, "dev-2": options}, "vars": {"x": 1}},
                "jetson": {"hosts": {"dev-1": options, "dev-2": options}, "vars": {"x": 1}},
                "monitoring": {"hosts": {"dev-2": options}},
                "ungrouped": {"vars": {}},
            }
        )
    )
    hosts = LabHosts(inventory)
    assert hosts.groups["jetson"] == ["dev-1", "dev-2"] and hosts.groups["monitoring"] == ["dev-2"]
    assert hosts.groups["ungrouped"] == []
    assert hosts.key_file("dev-1") == Path("/var/lib/rvm-lab/labs/m/id_ed25519")
    assert hosts.hostvars["dev-2"]["ansible_host"] == "10.213.3.11"
