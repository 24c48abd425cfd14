"""Bad inventory values stop site.yml before anything changes, naming the variable.

Runs the real playbook against this machine over a local connection in check mode;
validation fails before the first task that could change anything.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from labtools import Run, playbook  # noqa: E402

# What may run before validation stops a host: the argument spec check and the preflight.
PREFLIGHT = {
    t["name"] for t in yaml.safe_load((REPO / "roles/base/tasks/preflight.yml").read_text())
}


def site(tmp_path: Path, **extra_vars: object) -> Run:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    jetson:\n      hosts:\n        localhost:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
    )
    return playbook(
        "site.yml", inventory, "--check", "--tags", "base", "-e", json.dumps(extra_vars),
        timeout=300, ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"base_ssh_max_auth_tries": "lots"},
            "base_ssh_max_auth_tries",
        ),
        (
            {"base_ssh_permit_root_login": "yes"},
            "base_ssh_permit_root_login must be one of: no, prohibit-password, got: yes",
        ),
        (
            {"base_packages": {"vim": True}},
            "base_packages",
        ),
        (
            {"base_journald_system_max_use": "lots"},
            "journald settings must be sizes like 512M",
        ),
        (
            {"base_service_user": "root"},
            "the detector must not run as root",
        ),
        (
            {"base_ntp_pools": [], "base_ntp_servers": []},
            "Set base_ntp_pools or base_ntp_servers",
        ),
        (
            {"base_firewall_ssh_sources": []},
            "base_firewall_enabled is true but base_firewall_ssh_sources is empty",
        ),
        (
            {"base_firewall_ssh_sources": ["10.40.0.0/24", "bastion.example.com", "10.40.0.0/33"]},
            "entries that are not an IPv4/IPv6 address or CIDR: bastion.example.com, 10.40.0.0/33.",
        ),
        # Hardening that would lock the operator out, or cannot work.
        (
            {"base_ssh_allow_groups": []},
            "base_ssh_allow_groups_enabled is true but base_ssh_allow_groups is empty",
        ),
        (
            {"base_ssh_allow_groups": ["operators"]},
            "none of which is in base_ssh_allow_groups=['operators']: the next SSH connection",
        ),
        (
            {"base_ssh_rate_limit_per_minute": 2},
            "base_ssh_rate_limit_per_minute 0 (off) or >= 5 (got 2)",
        ),
        (
            {"base_umask": "777"},
            'base_umask must be an octal umask such as "027" whose owner digit is 0 (got 777)',
        ),
    ],
)
def test_bad_value_fails_in_preflight_with_its_name(tmp_path, variables, expected):
    run = site(tmp_path, **variables)
    assert not run.ok, run.text
    assert expected in run.text, run.text
    # Nothing past validation ran: every task of the base role that started is the
    # argument check or a preflight task, and the host failed with nothing changed.
    started = re.findall(r"^TASK \[base : (.+?)\]", run.stdout, re.M)
    assert started[0].startswith("Validating arguments against arg spec"), started
    assert set(started[1:]) <= PREFLIGHT, started
    assert run.recap()["localhost"]["changed"] == 0
    assert run.recap()["localhost"]["failed"] == 1


def test_lab_play_refuses_a_production_inventory():
    # No connection is needed to refuse: the check runs on the controller.
    run = playbook("lab/site.yml", "inventories/production", "--check", timeout=300)
    assert not run.ok
    assert "rvm-ber-001 is not a lab host (rvm_lab is not true in its inventory)" in run.text
    assert "For a real fleet run `ansible-playbook site.yml" in run.text
    assert "TASK [jetson_simulation" not in run.stdout
    assert run.recap()["rvm-ber-001"]["failed"] == 1


@pytest.mark.parametrize(
    ("drop", "missing"),
    [("independent_metrics", "independent_metrics.map50"), ("class_names", "class_names")],
)
def test_models_role_refuses_a_detection_model_without_its_evaluations(tmp_path, drop, missing):
    model = tmp_path / "deposit-yolo11n"
    model.mkdir()
    committed = REPO / "models" / "deposit-yolo11n"
    (model / "model.onnx").symlink_to(committed / "model.onnx")
    manifest = json.loads((committed / "manifest.json").read_text())
    del manifest[drop]
    (model / "manifest.json").write_text(json.dumps(manifest))
    play = tmp_path / "models.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: tensorrt_engine\n"
        "        tasks_from: preflight\n"
    )
    models = [{"name": "deposit-yolo11n", "src": str(model)}, {"name": "sam2-tiny-encoder"}]
    run = playbook(
        str(play), "localhost,", "--check", "-e", json.dumps({"tensorrt_engine_models": models}),
        timeout=300, ANSIBLE_ROLES_PATH=str(REPO / "roles"),
    )  # fmt: skip
    assert not run.ok, run.text
    assert f"model deposit-yolo11n ({model}/manifest.json) lacks {missing}" in run.text, run.text
    assert "measure it with training/evaluate.py" in run.text


PULL = {
    "pull_mode_enabled": True,
    "pull_mode_repo_url": "https://git.example.com/rvm/fleet.git",
    "pull_mode_ring": "canary",
    "pull_mode_signing_keys": [
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----"
    ],
}


def pull_preflight(tmp_path: Path, variables: dict) -> Run:
    """pull_mode's preflight on this machine (facts gathered: it checks the Python)."""
    play = tmp_path / "pull.yml"
    play.write_text(
        "- hosts: localhost\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: pull_mode\n"
        "        tasks_from: preflight\n"
    )
    return playbook(
        str(play), "localhost,", "-c", "local", "--check", "-e", json.dumps(variables),
        "-e", f"ansible_python_interpreter={sys.executable}",
        timeout=300, ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"),
        ANSIBLE_LOG_PATH=str(tmp_path / "ansible-output.txt"),  # not the working directory
    )  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"pull_mode_repo_url": ""}, "needs pull_mode_repo_url: the fleet repository"),
        ({"pull_mode_repo_url": "git.example.com:rvm/fleet"}, "needs pull_mode_repo_url"),
        ({"pull_mode_ring": ""}, "needs pull_mode_ring: the ring this device follows"),
        ({"pull_mode_signing_keys": []}, "needs pull_mode_signing_keys: the ASCII-armoured"),
        ({"pull_mode_signing_keys": ["not a key"]}, "needs pull_mode_signing_keys"),
        ({"pull_mode_inventory": "/etc/inventory"}, "needs pull_mode_inventory: a path inside"),
    ],
    ids=["no-url", "scp-like-url", "no-ring", "no-keys", "not-a-key", "absolute-inventory"],
)
def test_a_pull_mode_inventory_missing_a_setting_stops_in_preflight(tmp_path, bad, expected):
    run = pull_preflight(tmp_path, {**PULL, **bad})
    assert not run.ok, run.text
    assert f"localhost: pull mode (pull_mode_enabled) {expected}" in run.text, run.text
    assert run.recap()["localhost"]["changed"] == 0


def test_a_complete_pull_mode_inventory_passes_preflight(tmp_path):
    run = pull_preflight(tmp_path, PULL)
    assert run.ok, run.text
