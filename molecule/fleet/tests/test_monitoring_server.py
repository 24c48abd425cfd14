"""The monitoring host as an operator checks it: Prometheus scrapes every device of the
inventory, loads every alert rule of the repository, Alertmanager groups, inhibits and
notifies the lab's webhook receiver, and the web UIs answer only the management network,
with basic auth. Bad monitoring input stops the play in preflight, naming what is wrong.

Runs after Molecule converged the lab (lab/site.yml). The node job's targets must be up;
the detector and tegrastats jobs must be up wherever the device listens on their port
(the monitoring_agent role and the detector's metrics listener put them there).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, LabHosts, Run  # noqa: E402
from labtools import playbook as run_playbook  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
MONITOR = HOSTS.groups["monitoring"][0]
DEVICES = HOSTS.groups["jetson"]
ADDRESS = HOSTS.hostvars[MONITOR]["ansible_host"]
PROMETHEUS = f"http://{ADDRESS}:9090"
ALERTMANAGER = f"http://{ADDRESS}:9093"
JOBS = {"node": 9100, "detector": 9101, "tegrastats": 9102}
RECEIVED = "/var/lib/lab-alert-receiver/alerts.jsonl"
# The lab's stand-in for ansible-vault (inventories/lab/group_vars/all.yml and monitoring.yml).
SECRETS = HOSTS.secrets_dir(MONITOR)


def alert_names() -> set[str]:
    return {
        rule["alert"]
        for path in (REPO / "monitoring" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def request(url: str, body: object = None, auth: bool = True) -> tuple[int, bytes]:
    """(status, body) of a request from the controller; POST when body is given."""
    headers = {"Content-Type": "application/json"}
    if auth:
        password = (SECRETS / "monitoring-web-password").read_text().strip()
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(url: str, body: object = None) -> object:
    status, payload = request(url, body)
    assert status == 200, f"{url}: {status} {payload[:300]!r}"
    return json.loads(payload) if payload else None


def eventually(check, timeout_s: float, what: str, every_s: float = 2):
    """The first truthy result of check() within timeout_s, else fail saying what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"not within {timeout_s:.0f} s: {what}"
            return result
        time.sleep(every_s)


def notifications() -> list[dict]:
    out = HOSTS.ssh(MONITOR, f"cat {RECEIVED} 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def listening(host: str, port: int) -> bool:
    return f":{port} " in HOSTS.ssh(host, f"ss -Hltn 'sport = :{port}'").stdout + " "


# --- the services ----------------------------------------------------------------------


def test_prometheus_and_alertmanager_run_and_ask_for_a_password() -> None:
    for unit in ("prometheus", "prometheus-alertmanager"):
        state = HOSTS.ssh(MONITOR, f"systemctl is-active {unit}", check=False).stdout.strip()
        assert state == "active", f"{unit} is {state}"
    for base in (PROMETHEUS, ALERTMANAGER):
        assert request(f"{base}/-/ready")[0] == 200
        assert request(f"{base}/-/ready", auth=False)[0] == 401, (
            f"{base} answers without a password"
        )
    # Alertmanager alone: its cluster (gossip) port is off.
    assert not listening(MONITOR, 9094)


def test_prometheus_runs_the_rendered_config() -> None:
    config = yaml.safe_load(api(f"{PROMETHEUS}/api/v1/status/config")["data"]["yaml"])
    runbook = config["global"]["external_labels"]["runbook_base"]
    assert runbook.endswith("/docs/operations.md"), runbook
    assert config["global"]["scrape_interval"] == "5s"  # the lab's timing (group_vars)
    assert api(f"{PROMETHEUS}/api/v1/status/runtimeinfo")["data"]["reloadConfigSuccess"] is True


def test_every_device_is_scraped_by_every_job_with_its_device_label() -> None:
    def targets() -> dict[tuple[str, str], dict]:
        active = api(f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
        found = {(t["labels"].get("device"), t["labels"]["job"]): t for t in active}
        wanted = [(d, j) for d in DEVICES for j in JOBS]
        # Wait until every target has been scraped once (health leaves "unknown").
        if all(k in found and found[k]["health"] != "unknown" for k in wanted):
            return found
        return {}

    found = eventually(targets, 60, "every device target scraped once")
    for device in DEVICES:
        address = HOSTS.hostvars[device]["ansible_host"]
        for job, port in JOBS.items():
            target = found[(device, job)]
            assert target["labels"]["instance"] == f"{address}:{port}"
            if job == "node" or listening(device, port):
                assert target["health"] == "up", f"{device} {job}: {target['lastError']}"


def test_a_device_added_to_the_inventory_is_scraped_after_a_re_run(tmp_path: Path) -> None:
    extra = tmp_path / "more-devices.yml"
    # An address on the lab network where nothing answers: the target exists and is down.
    name, spare = "fleet-dev-added", ADDRESS.rsplit(".", 1)[0] + ".250"
    extra.write_text(
        "all:\n  children:\n    jetson:\n      hosts:\n"
        f"        {name}:\n          ansible_host: {spare}\n"
    )

    def added() -> set[str]:
        active = api(f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
        return {t["labels"]["instance"] for t in active if t["labels"].get("device") == name}

    try:
        run = monitoring_play("-i", str(extra))
        assert run.ok, run.text[-3000:]
        wanted = {f"{spare}:{port}" for port in JOBS.values()}
        eventually(lambda: added() == wanted, 60, f"targets {wanted} in Prometheus")
    finally:
        # The inventory without it again: its targets go.
        assert monitoring_play().ok
    eventually(lambda: not added(), 60, "the removed device's targets gone")


def test_every_alert_rule_of_the_repository_is_loaded() -> None:
    groups = api(f"{PROMETHEUS}/api/v1/rules?type=alert")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == alert_names()
    for name, rule in loaded.items():
        assert not rule.get("lastError"), f"{name}: {rule['lastError']}"
    annotations = loaded["RvmDeviceDown"]["annotations"]
    assert annotations["runbook_url"].startswith("{{ $externalLabels.runbook_base }}")


def test_alertmanager_groups_by_device_inhibits_and_has_its_receiver() -> None:
    config = yaml.safe_load(api(f"{ALERTMANAGER}/api/v2/status")["config"]["original"])
    assert config["route"]["group_by"] == ["alertname", "device"]
    assert config["route"]["group_wait"] == "10s"
    inhibit = config["inhibit_rules"]
    assert any(
        r.get("source_matchers") == ['alertname="RvmDeviceDown"']
        and r.get("target_matchers") == ['alertname!="RvmDeviceDown"']
        and r.get("equal") == ["device"]
        for r in inhibit
    ), inhibit
    receiver = next(r for r in config["receivers"] if r["name"] == config["route"]["receiver"])
    # The API masks secrets; the lab's receiver URL is not one it knows to mask.
    assert receiver["webhook_configs"][0]["send_resolved"] is True
    mode = HOSTS.ssh(MONITOR, "stat -c '%a %U %G' /etc/prometheus/alertmanager.yml").stdout.split()
    assert mode == ["640", "root", "prometheus"]


# --- who may connect -------------------------------------------------------------------


@pytest.mark.parametrize("port", [9090, 9093])
def test_web_ui_is_closed_to_a_device_and_open_to_the_controller(port: int) -> None:
    code = (
        "import socket\n"
        "try:\n"
        f" socket.create_connection(({ADDRESS!r}, {port}), timeout=3).close(); print('open')\n"
        "except OSError as e:\n print(type(e).__name__)"
    )
    seen = HOSTS.ssh(DEVICES[0], f"python3 -c {shlex.quote(code)}").stdout.strip()
    assert seen != "open", f"{DEVICES[0]} reaches {MONITOR}:{port}"
    with socket.create_connection((ADDRESS, port), timeout=5):
        pass


# --- inhibition in the real Alertmanager ------------------------------------------------


def test_device_down_inhibits_the_devices_other_alerts() -> None:
    # A device name no real target has, so nothing else fires or resolves for it.
    device = f"inhibit-test-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)

    def alert(name: str, ends: datetime) -> dict:
        return {
            "labels": {"alertname": name, "device": device, "severity": "critical"},
            "annotations": {"summary": f"{device}: {name} (test_monitoring_server)"},
            "startsAt": now.isoformat(),
            "endsAt": ends.isoformat(),
        }

    fire = [alert("RvmDeviceDown", now + timedelta(minutes=5)),
            alert("RvmCameraStale", now + timedelta(minutes=5))]  # fmt: skip
    api(f"{ALERTMANAGER}/api/v2/alerts", fire)
    try:

        def notified(name: str) -> list[dict]:
            return [
                n
                for n in notifications()
                for a in n["body"]["alerts"]
                if a["labels"].get("device") == device and a["labels"]["alertname"] == name
            ]

        eventually(lambda: notified("RvmDeviceDown"), 60, "RvmDeviceDown at the lab receiver")
        states = {
            a["labels"]["alertname"]: a["status"]
            for a in api(f"{ALERTMANAGER}/api/v2/alerts?filter=device%3D%22{device}%22")
        }
        assert states["RvmDeviceDown"]["state"] == "active"
        assert states["RvmCameraStale"]["state"] == "suppressed"
        assert states["RvmCameraStale"]["inhibitedBy"], states
        # Both groups were flushed after the same group_wait (10 s); wait two more.
        time.sleep(20)
        assert not notified("RvmCameraStale"), "an inhibited alert was notified"
    finally:
        api(
            f"{ALERTMANAGER}/api/v2/alerts",
            [alert(a["labels"]["alertname"], datetime.now(UTC)) for a in fire],
        )


# --- preflight -------------------------------------------------------------------------


def monitoring_play(*args: str) -> Run:
    """The lab play's monitoring part on the monitoring host only."""
    return run_playbook(
        LAB_PLAY, INVENTORY_FILE.parent, "--limit", MONITOR, "--tags", "monitoring_server",
        *args, timeout=600,
    )  # fmt: skip


def assert_stopped_in_preflight(run: Run, *expected: str) -> None:
    assert not run.ok, run.text[-2000:]
    for text in expected:
        assert text in run.text, run.text[-3000:]
    assert run.recap()[MONITOR]["changed"] == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("groups:\n  - name: broken\n    rules: [\n", "is not valid YAML"),
        ("alerts:\n  - alert: NoGroups\n", "has no `groups:` list"),
    ],
)
def test_a_rule_file_that_does_not_parse_stops_the_play(
    tmp_path: Path, content: str, problem: str
) -> None:
    for path in (REPO / "monitoring" / "rules").glob("*.yml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "zz-broken.yml").write_text(content)
    run = monitoring_play("-e", f"monitoring_server_rules_dir={tmp_path}")
    assert_stopped_in_preflight(run, f"{tmp_path}/zz-broken.yml: {problem}")
    installed = HOSTS.ssh(MONITOR, "ls /etc/prometheus/rules").stdout.split()
    assert "zz-broken.yml" not in installed


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"monitoring_server_webhook_url": ""}, "monitoring_server_webhook_url is empty"),
        (
            {
                "monitoring_server_email_enabled": True,
                "monitoring_server_email_to": ["ops@example.com"],
                "monitoring_server_email_from": "prometheus@example.com",
                "monitoring_server_email_smarthost": "smtp.example.com:587",
                "monitoring_server_email_auth_username": "prometheus",
            },
            "monitoring_server_email_auth_password from ansible-vault",
        ),
        ({"monitoring_server_webhook_enabled": False}, "no Alertmanager receiver is enabled"),
        ({"monitoring_server_web_password": ""}, "monitoring_server_web_password is empty"),
    ],
)
def test_a_receiver_or_password_without_its_secret_stops_the_play(
    variables: dict, expected: str
) -> None:
    assert_stopped_in_preflight(monitoring_play("-e", json.dumps(variables)), MONITOR, expected)


def test_a_device_without_an_address_stops_the_play(tmp_path: Path) -> None:
    extra = tmp_path / "more-devices.yml"
    extra.write_text("all:\n  children:\n    jetson:\n      hosts:\n        fleet-dev-99: {}\n")
    run = monitoring_play("-i", str(extra))
    assert_stopped_in_preflight(run, "fleet-dev-99 (group jetson) has no address")
