"""Bad inventory values stop site.yml before anything changes, naming the variable.

Runs the real playbook against this machine over a local connection in check mode;
validation fails before the first task that could change anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def site(tmp_path: Path, **extra_vars: object) -> subprocess.CompletedProcess:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    jetson:\n      hosts:\n        localhost:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
    )
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(tmp_path / "facts")
    return subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "site.yml", "-i", str(inventory), "--check", "--tags", "base",
            "-e", json.dumps(extra_vars),
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
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
    ],
)
def test_bad_value_fails_in_preflight_with_its_name(tmp_path, variables, expected):
    proc = site(tmp_path, **variables)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert expected in output, output
    # Nothing past validation ran.
    assert "changed=0" in output or "changed:" not in output
