"""A converged device tried as a security reviewer would: Lynis, and what base hardens.

Lynis (the distribution's package, installed by the lab's converge) audits one device; the
hardening index must reach 80. What it still suggests is printed, so a failing run says
what to fix and a passing one what docs/benchmarks.md accepts ("## Hardening (issue 15)").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
DEVICE = HOSTS.groups["jetson"][0]
MIN_HARDENING_INDEX = 80


@pytest.fixture(scope="module")
def lynis_report() -> dict[str, list[str]]:
    """Run `lynis audit system` on one device; its report file, key -> values."""
    HOSTS.ssh(DEVICE, "lynis audit system --quick --no-colors > /dev/null", timeout=600)
    report: dict[str, list[str]] = {}
    for line in HOSTS.ssh(DEVICE, "cat /var/log/lynis-report.dat").stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            report.setdefault(key.removesuffix("[]"), []).append(value)
    return report


def test_lynis_hardening_index_reaches_80(lynis_report):
    index = int(lynis_report["hardening_index"][0])
    suggestions = "\n".join(
        f"  {s.split('|')[0]}: {s.split('|')[1]}" for s in lynis_report.get("suggestion", [])
    )
    print(f"\n{DEVICE}: Lynis hardening index {index}; remaining suggestions:\n{suggestions}")
    assert index >= MIN_HARDENING_INDEX, (
        f"{DEVICE}: Lynis hardening index {index} < {MIN_HARDENING_INDEX}; "
        f"its suggestions:\n{suggestions}"
    )


def test_sshd_offers_only_the_fleet_profile():
    settings: dict[str, str] = {}
    for line in HOSTS.ssh(DEVICE, "sshd -T").stdout.lower().splitlines():
        key, _, value = line.partition(" ")
        # Options given more than once (allowgroups) are printed once per value.
        settings[key] = f"{settings[key]} {value}" if key in settings else value
    for key in ("allowtcpforwarding", "x11forwarding", "allowagentforwarding", "permittunnel"):
        assert settings[key] == "no", key
    assert settings["allowgroups"] == "root sudo"
    assert "cbc" not in settings["ciphers"]
    assert "sha1" not in settings["kexalgorithms"]
    assert not re.search(r"(^|,)hmac-(sha1|md5)", settings["macs"])
    assert settings["banner"] == "/etc/issue.net"


def test_the_controller_cannot_tunnel_through_a_device():
    """A local port forward through the device is refused, while a command still runs."""
    hv = HOSTS.hostvars[DEVICE]
    proc = subprocess.run(
        [
            "ssh", "-i", str(HOSTS.key_file(DEVICE)),
            *hv.get("ansible_ssh_common_args", "").split(),
            "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
            "-W", "127.0.0.1:22", f"root@{hv['ansible_host']}",
        ],
        capture_output=True, text=True, timeout=30, input="",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "administratively prohibited" in proc.stderr or "forwarding" in proc.stderr.lower()


def test_unused_protocols_and_usb_storage_cannot_load_while_cameras_can():
    config = HOSTS.ssh(DEVICE, "cat /etc/modprobe.d/*.conf").stdout
    for module in ("dccp", "sctp", "rds", "tipc", "firewire-core", "usb-storage", "uas"):
        assert f"install {module} /bin/false" in config, module
    assert not re.search(r"^(install|blacklist) uvcvideo", config, re.M)


def test_no_core_dumps_and_a_strict_umask():
    # A login shell as an operator gets it (pam_limits, profile.d).
    login = HOSTS.ssh(DEVICE, "bash -lc 'ulimit -c; umask; echo $TMOUT'").stdout.split()
    assert login == ["0", "0027", "900"]
    detector_limits = HOSTS.ssh(DEVICE, "systemctl show -p LimitCORE rvm-detector").stdout
    assert detector_limits.strip() == "LimitCORE=0"


def test_audit_rules_watch_the_files_that_matter():
    rules = HOSTS.ssh(DEVICE, "cat /etc/audit/rules.d/60-rvm.rules").stdout
    watched = ("/etc/ssh/sshd_config.d", "/etc/sudoers", "/etc/rvm-detector", "/opt/rvm-detector")
    for path in watched:
        assert f"-w {path} -p wa -k rvm-watch" in rules, path
