"""The lab tool against the real machine: hosts boot, talk, and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

RVMLAB = Path(__file__).resolve().parents[2] / "lab" / "rvmlab.py"
CGROUPS = Path("/sys/fs/cgroup")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def rvmlab(*args: str, env: dict | None = None, script: Path = RVMLAB):
    cmd = [sys.executable, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def machine_snapshot() -> dict[str, str]:
    """What tear-down must restore: namespaces, links, firewall, nspawn processes."""

    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout

    links = "\n".join(
        line.split()[0] for line in out("ip", "-br", "link").splitlines() if line.strip()
    )
    return {
        "netns": out("ip", "netns", "list"),
        "links": links,
        "nat": out("iptables", "-w", "-t", "nat", "-S"),
        "filter": out("iptables", "-w", "-S"),
        "nspawn": out("pgrep", "-a", "-f", "systemd-nspawn --boot"),
        "cgroups": sorted(map(str, [*CGROUPS.glob("rvmlab"), *CGROUPS.glob("*/rvmlab")])),
    }


def test_refuses_without_root_and_changes_nothing():
    # An unprivileged user must be able to read the script: copy it somewhere public.
    public = Path(tempfile.mkdtemp(prefix="rvmlab-test-"))
    try:
        public.chmod(0o755)
        script = public / "rvmlab.py"
        shutil.copy(RVMLAB, script)
        state = public / "state"
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "/usr/bin/python3", str(script), "up", "--lab", "nope", "--host", "a"],
            capture_output=True, text=True, env={"RVMLAB_STATE_DIR": str(state)},
        )  # fmt: skip
        state_made = state.exists()
    finally:
        shutil.rmtree(public)
    assert proc.returncode == 2
    assert "needs root" in proc.stderr
    assert "sudo" in proc.stderr
    assert not state_made


def test_names_the_missing_packages_and_changes_nothing(tmp_path):
    # A PATH with python but without debootstrap, nspawn, iptables...
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = {"PATH": str(bindir), "RVMLAB_STATE_DIR": str(tmp_path / "state")}
    proc = rvmlab("up", "--lab", "nope", "--host", "a", env=env)
    assert proc.returncode == 2
    for package in ("debootstrap", "systemd-container", "iptables"):
        assert package in proc.stderr
    assert "apt-get install" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_rejects_bad_names():
    proc = rvmlab("up", "--lab", "Bad_Name", "--host", "a")
    assert proc.returncode == 2
    assert "lab name 'Bad_Name' is not valid" in proc.stderr


@pytest.mark.lab
def test_two_labs_side_by_side_then_nothing_left(tmp_path):
    if not shutil.which("systemd-nspawn"):
        pytest.skip("systemd-container is not installed (run make setup)")
    before = machine_snapshot()
    inv_a, inv_b = tmp_path / "a.yml", tmp_path / "b.yml"
    try:
        up_a = rvmlab("up", "--lab", "pytest-a", "--host", "dev1", "--inventory", str(inv_a))
        assert up_a.returncode == 0, up_a.stderr
        up_b = rvmlab(
            "up", "--lab", "pytest-b", "--host", "dev1", "--host", "plat:platform,monitoring",
            "--inventory", str(inv_b),
        )  # fmt: skip
        assert up_b.returncode == 0, up_b.stderr
        addr_a = up_a.stdout.split()[1]
        addr_b_dev, addr_b_plat = up_b.stdout.splitlines()[0].split()[1], up_b.stdout.split()[4]
        assert addr_a.rsplit(".", 1)[0] != addr_b_dev.rsplit(".", 1)[0], "labs share a subnet"
        assert "platform" in inv_b.read_text()
        # Hosts of one lab reach each other over the lab network.
        ping = rvmlab("shell", "--lab", "pytest-b", "--host", "dev1", "--",
                      "ping", "-c1", "-W3", addr_b_plat)  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # Unplugged, a host is gone to the rest of the lab (it keeps running); plugged, back.
        assert rvmlab("cable", "--lab", "pytest-b", "--host", "plat", "unplug").returncode == 0
        ping = rvmlab("shell", "--lab", "pytest-b", "--host", "dev1", "--",
                      "ping", "-c1", "-W2", addr_b_plat)  # fmt: skip
        assert ping.returncode != 0, "an unplugged host still answers"
        assert rvmlab("cable", "--lab", "pytest-b", "--host", "plat", "plug").returncode == 0
        ping = rvmlab("shell", "--lab", "pytest-b", "--host", "dev1", "--",
                      "ping", "-c1", "-W5", addr_b_plat)  # fmt: skip
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # Each host has its own cgroups: the same unit started on two hosts at once never
        # fails (sharing one system.slice, one host's systemd removed the cgroup of a unit
        # the other was starting: status=219/CGROUP, 1 start in 10).
        starts = (
            "printf '[Service]\\nType=oneshot\\nExecStart=/bin/true\\n'"
            " >/run/systemd/system/r.service"
            " && systemctl daemon-reload && f=0; for i in $(seq 100); do "
            "systemctl start r.service 2>/dev/null || f=$((f+1)); done; echo failed=$f"
        )
        shell = [sys.executable, str(RVMLAB), "shell", "--lab", "pytest-b", "--host"]
        racers = [
            subprocess.Popen(
                [*shell, host, "--", "sh", "-c", starts], stdout=subprocess.PIPE, text=True
            )
            for host in ("dev1", "plat")
        ]
        assert [r.communicate(timeout=300)[0].strip() for r in racers] == ["failed=0"] * 2
        # The controller reaches each host over SSH with the lab's key, host key checked.
        for inventory, lab in ((inv_a, "pytest-a"), (inv_b, "pytest-b")):
            state = Path("/var/lib/rvm-lab/labs") / lab
            ssh = subprocess.run(
                [
                    "ssh", "-i", str(state / "id_ed25519"),
                    "-o", f"UserKnownHostsFile={state / 'known_hosts'}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                    f"root@{(addr_a if lab == 'pytest-a' else addr_b_dev)}",
                    "systemctl", "is-system-running",
                ],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert ssh.stdout.strip() in ("running", "degraded"), ssh.stderr
            assert inventory.exists()
        # `make lab` prints the monitoring host's web UIs from this.
        urls = rvmlab("urls", "--lab", "pytest-b")
        assert urls.returncode == 0, urls.stderr
        assert f"Prometheus    http://{addr_b_plat}:9090  (plat;" in urls.stdout
        assert f"Alertmanager  http://{addr_b_plat}:9093  (plat;" in urls.stdout
        # A lab name can only be used once at a time.
        again = rvmlab("up", "--lab", "pytest-a", "--host", "dev1")
        assert again.returncode == 2
        assert "exists already" in again.stderr
    finally:
        rvmlab("down", "--lab", "pytest-a")
        rvmlab("down", "--lab", "pytest-b")
    assert machine_snapshot() == before
