"""The fleet's firewall and the device telemetry, checked from other lab hosts.

Every host has base's default-deny inbound firewall: SSH only from the controller (the
lab's management network), a device's exporters only from the monitoring host, the
detector's local API from the device itself only. Connections are tried with a short
timeout from another lab host, as an attacker on the same network, or Prometheus, would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, LabHosts, playbook  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
DEVICES = HOSTS.groups["jetson"]
MONITOR = HOSTS.groups["monitoring"][0]
PLATFORM = HOSTS.groups["platform"][0]
NODE, DETECTOR_METRICS, TEGRASTATS, LOCAL_API, SSH = 9100, 9101, 9102, 8080, 22
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

# Run on a lab host: "open", "refused" (RST: nothing listens, or a reject) or "timeout"
# (the packet was dropped) for each port of one address.
_PROBE = """
import socket, sys
for port in {ports!r}:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(({address!r}, port))
        print(port, "open")
    except ConnectionRefusedError:
        print(port, "refused")
    except (TimeoutError, socket.timeout):
        print(port, "timeout")
    finally:
        s.close()
"""

_GET = """
import urllib.request as u
print(u.urlopen("http://{address}:{port}/metrics", timeout=10).read().decode())
"""


def address(host: str) -> str:
    return HOSTS.hostvars[host]["ansible_host"]


def probe(from_host: str, to_host: str, ports: list[int]) -> dict[int, str]:
    out = HOSTS.py(from_host, _PROBE.format(ports=ports, address=address(to_host)))
    return {int(port): state for port, state in (line.split() for line in out.splitlines())}


def listening(host: str) -> set[int]:
    """TCP ports the host listens on, on any address."""
    out = HOSTS.ssh(host, "ss -Hltn").stdout
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines()}


def scrape(from_host: str, device: str, port: int) -> str:
    return HOSTS.py(from_host, _GET.format(address=address(device), port=port))


@pytest.mark.parametrize("host", sorted(HOSTS.hostvars))
def test_firewall_is_loaded_default_deny_and_enabled(host):
    chain = HOSTS.ssh(host, "nft list chain inet fleet input").stdout
    assert "policy drop;" in chain
    assert HOSTS.ssh(host, "systemctl is-enabled nftables").stdout.strip() == "enabled"
    # What a reboot loads is what runs: the file parses and is the one loaded.
    HOSTS.ssh(host, "nft -c -f /etc/nftables.conf")


@pytest.mark.parametrize("device", DEVICES)
def test_device_ports_are_closed_to_another_lab_host(device):
    # The exporters and sshd listen on every address: only the firewall keeps them closed.
    assert {SSH, NODE, TEGRASTATS} <= listening(device)
    others = [PLATFORM, *[d for d in DEVICES if d != device][:1]]
    ports = [SSH, NODE, DETECTOR_METRICS, TEGRASTATS, LOCAL_API]
    for other in others:
        states = probe(other, device, ports)
        assert all(state != "open" for state in states.values()), (other, states)
        # Dropped, not answered: the firewall, not a closed port, refuses them.
        assert states[SSH] == states[NODE] == states[TEGRASTATS] == "timeout", (other, states)


@pytest.mark.parametrize("device", DEVICES)
def test_monitoring_host_reaches_the_exporters_and_nothing_else(device):
    states = probe(MONITOR, device, [NODE, TEGRASTATS, SSH, LOCAL_API])
    assert states[NODE] == states[TEGRASTATS] == "open", states
    assert states[SSH] != "open" and states[LOCAL_API] != "open", states


@pytest.mark.parametrize("device", DEVICES)
def test_detector_metrics_listener_is_open_to_the_monitoring_host_only(device):
    assert DETECTOR_METRICS in listening(device)
    assert probe(MONITOR, device, [DETECTOR_METRICS])[DETECTOR_METRICS] == "open"
    assert probe(PLATFORM, device, [DETECTOR_METRICS])[DETECTOR_METRICS] == "timeout"
    text = scrape(MONITOR, device, DETECTOR_METRICS)
    assert "rvm_ready 1.0" in text and 'rvm_build_info{release="' in text
    # The metrics listener is not the local API: no deposit can be made through it.
    code = (
        "import urllib.request as u, urllib.error as e\n"
        f"r = u.Request('http://{HOSTS.hostvars[device]['ansible_host']}:{DETECTOR_METRICS}/deposit',"
        " data=b'{}', method='POST')\n"
        "try: u.urlopen(r, timeout=5)\nexcept e.HTTPError as x: print(x.code)"
    )
    assert HOSTS.py(MONITOR, code).strip() == "404"


@pytest.mark.parametrize("device", DEVICES)
def test_node_exporter_reports_our_units_and_their_restarts(device):
    metrics = scrape(MONITOR, device, NODE)
    for unit in ("rvm-detector.service", "rvm-tegrastats-exporter.service", "nftables.service"):
        assert f'node_systemd_unit_state{{name="{unit}",state="active"' in metrics, unit
    assert 'node_systemd_service_restart_total{name="rvm-detector.service"}' in metrics
    # Limited to the fleet's units: sshd and the exporter itself are not reported.
    assert 'name="ssh.service"' not in metrics
    assert 'name="prometheus-node-exporter.service"' not in metrics


@pytest.mark.parametrize("device", DEVICES)
def test_tegrastats_exporter_serves_live_jetson_telemetry(device):
    metrics = scrape(MONITOR, device, TEGRASTATS)
    assert "rvm_tegrastats_up 1.0" in metrics
    assert 'rvm_jetson_temperature_celsius{sensor="tj"}' in metrics
    assert 'rvm_jetson_power_watts{rail="VDD_IN"}' in metrics
    assert "rvm_jetson_nvpmodel_info{" in metrics


@pytest.mark.parametrize("device", DEVICES)
def test_exporters_run_unprivileged_and_on_the_current_release(device):
    def main_pid(unit: str) -> str:
        return f"/proc/$(systemctl show -p MainPID --value {unit})"

    owners = HOSTS.ssh(
        device,
        f"stat -c %U {main_pid('prometheus-node-exporter')} {main_pid('rvm-tegrastats-exporter')}",
    ).stdout.split()
    assert owners == ["prometheus", "rvm-telemetry"]
    running = HOSTS.ssh(device, f"readlink {main_pid('rvm-tegrastats-exporter')}/cwd").stdout
    current = HOSTS.ssh(device, "readlink -f /opt/rvm-detector/current").stdout
    assert running.strip() == current.strip() != ""


def test_textfile_metric_written_by_rename_is_scraped():
    device = DEVICES[0]
    name = f"{TEXTFILE_DIR}/test_firewall.prom"
    HOSTS.ssh(device, f"echo 'rvm_test_textfile_marker 42' > {name}.tmp && mv {name}.tmp {name}")
    try:
        assert "rvm_test_textfile_marker 42" in scrape(MONITOR, device, NODE)
    finally:
        HOSTS.ssh(device, f"rm -f {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_deposit_api_answers_on_the_device_itself(device):
    code = (
        "import json, urllib.request as u\n"
        "r = u.Request('http://127.0.0.1:8080/deposit', data=b'{}', method='POST',"
        " headers={'Content-Type': 'application/json'})\n"
        "print(json.load(u.urlopen(r, timeout=60))['uuid'])"
    )
    assert len(HOSTS.py(device, code).strip()) == 36


@pytest.mark.parametrize("host", sorted(HOSTS.hostvars))
def test_ssh_from_the_controller_works(host):
    hv = HOSTS.hostvars[host]
    proc = subprocess.run(
        [
            "ssh", "-i", str(HOSTS.key_file(host)),
            *shlex.split(hv.get("ansible_ssh_common_args", "")),
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            f"{hv.get('ansible_user', 'root')}@{address(host)}", "hostname",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == host


def test_platform_edge_api_is_open_to_devices_only():
    port = 8000
    assert probe(DEVICES[0], PLATFORM, [port])[port] == "open"
    assert probe(MONITOR, PLATFORM, [port])[port] == "timeout"


# --- bad input: the preflight stops the run and names what to fix ----------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--tags", "base_firewall", "-e", '{"base_firewall_ssh_sources": []}'],
            "base_firewall_enabled is true but base_firewall_ssh_sources is empty",
        ),
        (
            ["--tags", "base_firewall", "-e",
             '{"base_firewall_ssh_sources": ["10.213.0.0/16", "ops.example.com", "10.1.2.300"]}'],
            "entries that are not an IPv4/IPv6 address or CIDR: ops.example.com, 10.1.2.300.",
        ),
        (
            ["--tags", "monitoring_agent", "-e", "monitoring_address="],
            "fleet-monitor has no address",
        ),
        (
            ["--tags", "monitoring_agent", "-e", "monitoring_address=prometheus.example.com"],
            "fleet-monitor has prometheus.example.com, which is not an IP address",
        ),
    ],
    ids=["ssh-sources-empty", "ssh-source-not-an-address", "monitor-no-address",
         "monitor-host-name"],
)  # fmt: skip
def test_bad_input_stops_the_run_naming_it(args: list[str], expected: str) -> None:
    rules = HOSTS.ssh(DEVICES[0], "nft list ruleset").stdout
    proc = playbook(LAB_PLAY, INVENTORY_FILE.parent, "--limit", f"{DEVICES[0]},{MONITOR}", *args)
    assert proc.returncode != 0
    assert expected in re.sub(r"\s+", " ", proc.stdout), proc.stdout[-4000:]
    # Stopped before anything changed: the loaded firewall is the one from before.
    assert HOSTS.ssh(DEVICES[0], "nft list ruleset").stdout == rules


def test_without_a_monitoring_group_nothing_is_opened(tmp_path: Path) -> None:
    """A fleet without group monitoring converges, says monitoring is off, opens nothing."""
    device = DEVICES[0]
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "group_vars").symlink_to(INVENTORY_FILE.parent / "group_vars")
    without = yaml.safe_load(INVENTORY_FILE.read_text())
    # rvmlab.py nests the groups under all.children; Molecule writes them at the top.
    for groups in (without, without["all"].get("children") or {}):
        groups.pop("monitoring", None)
    (inventory / "hosts.yml").write_text(json.dumps(without))
    try:
        proc = playbook(LAB_PLAY, inventory, "--limit", device, "--tags", "monitoring_agent")
        assert proc.ok, proc.stdout[-4000:]
        assert f"{device}: the inventory has no host in group monitoring, so monitoring is off" in (
            re.sub(r"\s+", " ", proc.stdout)
        )
        closed = {NODE: "timeout", TEGRASTATS: "timeout"}
        assert probe(MONITOR, device, [NODE, TEGRASTATS]) == closed
        assert "monitoring_agent.nft" not in HOSTS.ssh(device, "ls /etc/nftables.d").stdout.split()
    finally:
        again = playbook(
            LAB_PLAY, INVENTORY_FILE.parent, "--limit", device, "--tags", "monitoring_agent"
        )
        assert again.ok, again.stdout[-4000:]
    assert probe(MONITOR, device, [NODE, TEGRASTATS]) == {NODE: "open", TEGRASTATS: "open"}
