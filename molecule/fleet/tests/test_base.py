"""What an operator checks on every host after the base role: testinfra over Ansible's SSH."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]

SSH_NO_KEYS = [
    "ssh",
    "-o", "BatchMode=yes",
    "-o", "PubkeyAuthentication=no",
    "-o", "PreferredAuthentications=password,keyboard-interactive",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=10",
]  # fmt: skip


def test_service_account_cannot_log_in(host):
    user = host.user("rvm")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert "video" in user.groups
    assert user.uid != 0
    assert user.password in ("!", "*", "!*")
    home = host.file("/var/lib/rvm-detector")
    assert home.is_directory
    assert home.user == "rvm"
    assert home.mode == 0o750


def test_sshd_effective_config_is_keys_only(host):
    effective = host.check_output("sshd -T").lower().splitlines()
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "permitrootlogin without-password" in effective
    assert "authenticationmethods publickey" in effective


def test_sshd_refuses_a_password_login_over_the_network(host):
    address = host.ansible.get_variables()["ansible_host"]
    for user in ("root", "rvm"):
        proc = subprocess.run(
            [*SSH_NO_KEYS, f"{user}@{address}", "true"], capture_output=True, text=True
        )
        assert proc.returncode == 255
        # The server offers nothing but public keys.
        assert "Permission denied (publickey)" in proc.stderr


def test_journald_is_persistent_and_capped(host):
    assert host.file("/var/log/journal").is_directory
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert host.file(f"/var/log/journal/{machine_id}").is_directory
    # journald states the cap it is running with when it opens the system journal.
    started = host.check_output("journalctl -b -u systemd-journald --no-pager -o cat")
    assert "System Journal (/var/log/journal/" in started
    # The cap the lab inventory sets (small, for the log-flood test in test_logs.py).
    cap = yaml.safe_load((REPO / "inventories/lab/group_vars/all.yml").read_text())[
        "base_journald_system_max_use"
    ]
    assert f"max {float(cap[:-1]):.1f}{cap[-1]}" in started, started


def test_time_sync_is_active(host):
    chrony = host.service("chrony")
    assert chrony.is_running
    assert chrony.is_enabled
    sources = host.check_output("chronyc -n sources")
    gateway = host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"][
        "ansible_default_ipv4"
    ]["gateway"]
    assert gateway in sources
    # Read the link itself: timedatectl asks timedated over D-Bus, which times out under load.
    assert host.check_output("readlink /etc/localtime").endswith("/zoneinfo/Etc/UTC")


def test_apt_is_configured_for_a_fleet(host):
    dump = host.check_output("apt-config dump")
    assert 'APT::Install-Recommends "false";' in dump
    assert host.package("unattended-upgrades").is_installed
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert "Debian-Security" in dump
