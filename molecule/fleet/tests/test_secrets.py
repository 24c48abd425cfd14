"""Secrets appear nowhere but where they belong, after the fleet scenario's whole story.

Runs last: conftest.py beside it moves it after every other test file, whatever order
the files are given in (by name it already sorts after test_monitoring*.py).
Every secret the scenario used comes from the lab's secrets directory beside its SSH key
(the lab's stand-in for ansible-vault): each device's platform API key, the monitoring web
password, the journal shipping keys (the lab CA's and each host's). It must not be in any
host's journal, in any file on a host but the ones meant to hold it, or in any of the
Ansible output of this lab (converge, idempotence, check, and the tests' own runs). Each
file that holds one is 0600 and owned by the account that reads it (or 0640 root:<group>
where a group of readers needs it).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts, ansible_output_file  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
SECRETS_DIR = HOSTS.secrets_dir(HOSTS.groups["all"][0])

# Where each secret is meant to be on a host: path -> (mode, owner, group).
DEVICE_FILES = {
    "/etc/rvm-detector/platform-api-key": ("0600", "rvm", "rvm"),
    "/etc/ssl/journal-upload/client.key": ("0600", "root", "root"),
    # The repository password, and the REST password inside the repository's URL.
    "/etc/rvm-backup/password": ("0600", "root", "root"),
    "/etc/rvm-backup/backup.env": ("0600", "root", "root"),
}
# A device in pull mode: what its pull runs cannot work out themselves (roles/pull_mode).
PULL_FILES = {"/etc/rvm-pull/vars.json": ("0600", "root", "root")}
# Every device's repository password (prune and check open the repositories), the TLS key.
BACKUP_FILES = {
    "/etc/rvm-backup-server/tls.key": ("0640", "root", "restic-repo"),
    **{
        f"/etc/rvm-backup-server/passwords/{device}": ("0600", "restic-repo", "restic-repo")
        for device in HOSTS.groups["jetson"]
    },
}
MONITOR_FILES = {
    "/etc/prometheus/web-password": ("0640", "root", "prometheus"),
    "/etc/ssl/journal-remote/server.key": ("0640", "root", "systemd-journal-remote"),
}
# LAB ONLY: the platform stand-in knows every device's key, as the real platform does.
PLATFORM_FILES = {
    "/etc/platform-standin/api-keys": ("0600", "platform-standin", "platform-standin"),
}

# Searched on every host: where anything a service, a package or a user writes lands.
# /usr (package files) and the virtual filesystems are left out.
SEARCHED = "/etc /var /opt /srv /root /home /tmp /usr/local"
# Text a key file holds that is unique to it: its longest base64 line.
MIN_SECRET_LEN = 16


def _secrets() -> dict[str, str]:
    """name -> a string only that secret contains."""
    found: dict[str, str] = {}
    for path in sorted(SECRETS_DIR.rglob("*")):
        if not path.is_file() or path.suffix in (".crt", ".csr"):
            continue
        text = path.read_text()
        if "PRIVATE KEY" in text:
            text = max((ln for ln in text.splitlines() if "-----" not in ln), key=len)
        found[str(path.relative_to(SECRETS_DIR))] = text.strip()
    return found


SECRETS = _secrets()


def _files_for(host: str) -> dict[str, tuple[str, str, str]]:
    groups = [g for g, members in HOSTS.groups.items() if host in members]
    files: dict[str, tuple[str, str, str]] = {}
    if "jetson" in groups:
        files |= DEVICE_FILES
    if "pull" in groups:
        files |= PULL_FILES
    if "monitoring" in groups:
        files |= MONITOR_FILES
    if "platform" in groups:
        files |= PLATFORM_FILES
    if "backup" in groups:
        files |= BACKUP_FILES
    return files


def _on_host(host: str, script: str) -> subprocess.CompletedProcess:
    """Run SCRIPT on HOST with the secrets, one a line, in the file $PATTERNS (0600 in /dev/shm,
    outside what is searched, removed after): they travel over stdin, never on a command line
    a process list or log could show."""
    wrapped = (
        'PATTERNS=$(mktemp -p /dev/shm); trap \'rm -f "$PATTERNS"\' EXIT; cat > "$PATTERNS"; '
        + script
    )
    secrets = "\n".join(SECRETS.values()) + "\n"
    return HOSTS.ssh(host, wrapped, check=False, timeout=300, input=secrets)


def test_the_scenario_used_secrets():
    names = set(SECRETS)
    assert any(n.startswith("api-key-") for n in names), names
    assert any(n.startswith("pki/") and n.endswith(".key") for n in names), names
    assert all(len(v) >= MIN_SECRET_LEN for v in SECRETS.values()), "a secret too short to search"


@pytest.mark.parametrize("host", HOSTS.groups["all"])
def test_no_secret_in_the_journal(host):
    proc = _on_host(host, 'journalctl --no-pager -o cat | grep -c -F -f "$PATTERNS"')
    assert proc.returncode == 1 and proc.stdout.strip() == "0", (
        f"{host}: {proc.stdout.strip()} journal lines hold a secret (grep rc {proc.returncode}, "
        f"{proc.stderr.strip()}); find them with journalctl | grep -F <secret>"
    )


@pytest.mark.parametrize("host", HOSTS.groups["all"])
def test_no_secret_in_a_file_outside_its_place(host):
    proc = _on_host(
        host,
        f'grep -rlsF -f "$PATTERNS" --exclude-dir=journal {SEARCHED} 2>/dev/null; exit 0',
    )
    found = set(proc.stdout.split())
    assert proc.returncode == 0, proc.stderr
    # The search sees the secrets where they belong, so it would see them anywhere else.
    assert set(_files_for(host)) <= found, f"{host}: the search missed {_files_for(host)}"
    assert not found - set(_files_for(host)), (
        f"{host}: secrets in {sorted(found - set(_files_for(host)))}, "
        f"where only {sorted(_files_for(host))} should hold them"
    )


@pytest.mark.parametrize("host", HOSTS.groups["all"])
def test_secret_files_are_closed_and_owned_by_their_reader(host):
    for path, (mode, owner, group) in _files_for(host).items():
        stat = HOSTS.ssh(host, f"stat -c '%a %U %G' {shlex.quote(path)}").stdout.split()
        assert stat == [mode.lstrip("0"), owner, group], f"{host}:{path} is {stat}"


def test_no_secret_in_the_ansible_output():
    log = ansible_output_file(INVENTORY_FILE)
    assert log.is_file() and "PLAY RECAP" in log.read_text(errors="replace"), (
        f"{log}: no Ansible output kept (ANSIBLE_LOG_PATH, .config/molecule/config.yml)"
    )
    text = log.read_text(errors="replace")
    leaked = sorted(name for name, value in SECRETS.items() if value in text)
    assert not leaked, f"{log} holds the secrets {leaked}: a task that shows them needs no_log"
