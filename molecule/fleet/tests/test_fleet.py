"""The fleet's release story on lab hosts, as an operator would check it.

Runs after Molecule converged release 1 (and checked idempotence) on the devices and
the platform host: release 2, a release 3 that never becomes ready, a tagged rollback
to release 1, and bad input. After each step, deposits made on every device over its
local API must reach the platform stand-in exactly once. Steps depend on the ones
before (one story), so they run in file order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, LabHosts, Run, ansible_env  # noqa: E402
from labtools import playbook as run_playbook  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
PLATFORM = "fleet-platform"
ROOT = "/opt/rvm-detector"
TIMINGS = REPO / ".cache" / "fleet-timings.jsonl"
STATE: dict[str, object] = {}
BAD_MODEL = json.dumps(
    {"tensorrt_engine_models": [{"name": "deposit-yolo11n", "sha256": "0" * 64}]}
)


HOSTS = LabHosts(INVENTORY_FILE)
ready, deposit, platform_admin = HOSTS.ready, HOSTS.deposit, HOSTS.platform_admin
assert_delivered_once = HOSTS.assert_delivered_once
DEVICES = HOSTS.groups["jetson"]
CANARY = DEVICES[0]
ssh = HOSTS.ssh
py = HOSTS.py


def playbook(*args: str) -> Run:
    """The lab play (which wraps site.yml) on this scenario's hosts, as `make lab` runs it."""
    return run_playbook(LAB_PLAY, INVENTORY_FILE.parent, *args, timeout=1200)


def record_timing(what: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    with TIMINGS.open("a") as f:
        f.write(json.dumps({"what": what, "seconds": round(seconds, 1), "at": time.time()}) + "\n")


def current(host: str) -> str:
    return ssh(host, f"readlink {ROOT}/current").stdout.strip().removeprefix("releases/")


def releases(host: str) -> list[str]:
    return ssh(host, f"ls {ROOT}/releases").stdout.split()


def deposit_round() -> list[str]:
    uuids = [deposit(h) for h in DEVICES for _ in range(2)]
    STATE.setdefault("all_deposits", []).extend(uuids)  # type: ignore[union-attr]
    return uuids


# --- release 1 (Molecule's converge) -----------------------------------------------


def test_release_1_runs_on_every_device() -> None:
    ids = {h: current(h) for h in DEVICES}
    assert len(set(ids.values())) == 1, f"one release id for the whole run, got {ids}"
    STATE["r1"] = ids[CANARY]
    for h in DEVICES:
        assert ready(h), f"{h} is not ready"
        record = json.loads(ssh(h, f"cat {ROOT}/current/release.json").stdout)
        assert record["release_id"] == STATE["r1"]
        assert record["models"][0]["sha256"] in record["models"][0]["path"]
        # The release's console scripts work from its final path (built under another).
        for script in ("rvm-detector", "rvm-tegrastats-exporter"):
            assert ssh(h, f"{ROOT}/current/venv/bin/{script} --help", check=False).returncode == 0


def test_service_is_sandboxed_and_not_root() -> None:
    for h in DEVICES:
        out = ssh(h, "systemd-analyze security --no-pager rvm-detector").stdout
        exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        assert exposure <= 3.0, f"{h}: exposure {exposure}"
        props = ssh(
            h, "systemctl show -p User -p Type -p WatchdogUSec -p Restart rvm-detector"
        ).stdout
        assert "User=rvm" in props and "Type=notify" in props and "Restart=on-failure" in props
        pid = ssh(h, "systemctl show -p MainPID --value rvm-detector").stdout.strip()
        assert ssh(h, f"stat -c %U /proc/{pid}").stdout.strip() == "rvm"
        key = ssh(h, "stat -c '%a %U' /etc/rvm-detector/platform-api-key").stdout.split()
        assert key == ["600", "rvm"], f"{h}: API key file {key}"
        # The spool is outside every release.
        assert ssh(h, "grep -A1 '^spool:' /opt/rvm-detector/current/config.yml").stdout.count(
            "/var/lib/rvm-detector/spool"
        )


def test_deposits_of_release_1_reach_the_platform_once() -> None:
    assert_delivered_once(deposit_round())


# --- release 2 ------------------------------------------------------------------------


def test_release_2_rolls_out_while_deposits_wait_in_the_spool() -> None:
    # The platform is away: deposits are spooled by release 1 and must be sent by release 2.
    platform_admin("/admin/faults", {"down": True})
    waiting = deposit_round()
    # With TensorRT engines asked for: the simulated trtexec builds each device's plan, and
    # the gate (release 1's own detector) cannot load it, so every device stays on ONNX
    # Runtime, and the run's summary says which device, which model and why.
    proc = playbook(
        "--tags", "detector", "-e", "release_id=fleet-r2", "-e", '{"tensorrt_engine_build": true}'
    )  # fmt: skip
    platform_admin("/admin/faults", {"reset": True})
    assert proc.returncode == 0, proc.stdout[-4000:]
    record_timing(f"release switch ({len(DEVICES)} devices, canary + ramps)", proc.seconds)
    for h in DEVICES:
        assert current(h) == "fleet-r2"
        assert ssh(h, f"cat {ROOT}/releases/fleet-r2/previous").stdout.strip() == STATE["r1"]
        assert ready(h)
    summary = re.sub(r"\s+", " ", proc.stdout)
    assert "release fleet-r2 (was " in summary
    for h in DEVICES:
        assert f"{h}: deposit-yolo11n on onnxruntime: gate failed: the gate could not" in summary
        config = yaml.safe_load(ssh(h, f"cat {ROOT}/current/config.yml").stdout)["model"]
        assert config["backend"] == "onnxruntime" and config["path"].endswith("/model.onnx")
        gate = ssh(h, f"cat {ROOT}/models/deposit-yolo11n/current/engines/*/gate.json").stdout
        assert json.loads(gate)["passed"] is False
    # Spooled through the whole rollout, these may sit in the uploader's longest backoff
    # (upload.backoff_max_s: the lab's 30 s) when the platform comes back.
    assert_delivered_once(waiting, timeout_s=180)
    assert_delivered_once(deposit_round())


# --- release 3: never ready -----------------------------------------------------------


def test_release_3_never_ready_canary_switches_back_and_the_run_stops() -> None:
    proc = playbook(
        "--tags",
        "detector",
        "-e",
        "release_id=fleet-r3",
        "-e",
        "detector_app_camera_source=/dev/video-that-never-delivers",
        "-e",
        "detector_app_ready_timeout_s=20",
    )
    assert proc.returncode != 0
    out = re.sub(r"\s+", " ", proc.stdout)
    assert f"{CANARY}: release fleet-r3 did not become ready" in out, proc.stdout[-4000:]
    assert "Switched back to fleet-r2, which is ready again" in out
    back = re.search(r"back on fleet-r2 \(ready=True, ([\d.]+)s\)", out)
    assert back, out[-3000:]
    record_timing("bad release: restart to canary back on the old release", float(back.group(1)))
    assert current(CANARY) == "fleet-r2" and ready(CANARY)
    assert "fleet-r3" in releases(CANARY), "the bad release is kept for inspection"
    for h in DEVICES[1:]:
        assert current(h) == "fleet-r2"
        assert "fleet-r3" not in releases(h), f"{h} was touched after the canary failed"
    assert_delivered_once(deposit_round())


# --- rollback -------------------------------------------------------------------------


def test_tagged_rollback_to_release_1() -> None:
    proc = playbook("--tags", "rollback", "-e", f"rollback_to={STATE['r1']}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    record_timing(f"tagged rollback ({len(DEVICES)} devices)", proc.seconds)
    for h in DEVICES:
        assert current(h) == STATE["r1"]
        assert ready(h)
    assert f"rolled back to {STATE['r1']} (was fleet-r2) ready=True" in re.sub(
        r"\s+", " ", proc.stdout
    )
    assert_delivered_once(deposit_round())


def test_the_same_rollback_again_changes_nothing() -> None:
    proc = playbook("--tags", "rollback", "-e", f"rollback_to={STATE['r1']}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    recap = proc.recap()
    assert all(recap[h]["changed"] == 0 for h in DEVICES), recap


# --- bad input: each stops the host before anything switches ---------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--tags", "rollback", "-e", "rollback_to=no-such-release"],
            f"{CANARY}: cannot roll back to no-such-release: it is not on this host",
        ),
        (
            ["--tags", "detector", "-e", "release_id=fleet-bad-config", "-e",
             '{"detector_app_config_extra": {"camera": {"fps": 5}, "trigger": {"fps": 0}}}'],
            f"{CANARY}: the configuration of release fleet-bad-config fails validation",
        ),
        (
            ["--tags", "detector", "-e", "release_id=fleet-no-disk", "-e",
             "detector_app_min_free_mb=100000000"],
            "needs detector_app_min_free_mb=100000000; nothing was switched",
        ),
        (
            ["--tags", "detector", "-e", "release_id=fleet-bad-model", "-e", BAD_MODEL],
            f"model deposit-yolo11n: expected sha256 '{'0' * 64}'",
        ),
    ],
    ids=["rollback_to-missing", "config-invalid", "disk-too-full", "model-sha256-mismatch"],
)  # fmt: skip
def test_bad_input_stops_the_host_before_anything_switches(args: list[str], expected: str) -> None:
    before = {h: current(h) for h in DEVICES}
    proc = playbook("--limit", CANARY, *args)
    assert proc.returncode != 0
    assert expected in re.sub(r"\s+", " ", proc.stdout), proc.stdout[-4000:]
    assert {h: current(h) for h in DEVICES} == before
    assert ready(CANARY)


def test_an_interrupted_rollout_leaves_every_device_on_a_complete_release() -> None:
    before = {h: current(h) for h in DEVICES}
    run = subprocess.Popen(
        ["ansible-playbook", str(LAB_PLAY), "-i", str(INVENTORY_FILE.parent),
         "--tags", "detector", "-e", "release_id=fleet-interrupted"],
        cwd=REPO, env=ansible_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        partial = f"test -d {ROOT}/releases/.tmp-fleet-interrupted"
        while ssh(CANARY, partial, check=False).returncode != 0:
            assert time.monotonic() < deadline and run.poll() is None, "never saw the build start"
            time.sleep(1)
        time.sleep(5)  # in the middle of building the release (venv, install)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # as a lost SSH session or a kill -9 would
        run.wait()
    for h in DEVICES:
        assert current(h) == before[h]
        ssh(h, f"test -f {ROOT}/current/release.json && test -x {ROOT}/current/venv/bin/python")
        assert ready(h)
    assert "fleet-interrupted" not in releases(CANARY), (
        "a half-built release must not look complete"
    )
    # The next run removes the half-built directory and completes the release.
    proc = playbook("--limit", CANARY, "--tags", "detector", "-e", "release_id=fleet-interrupted")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert current(CANARY) == "fleet-interrupted" and ready(CANARY)
    assert ssh(CANARY, f"ls -A {ROOT}/releases").stdout.count(".tmp-") == 0
    assert_delivered_once(deposit_round())


def test_all_deposits_of_the_story_were_stored_exactly_once() -> None:
    assert_delivered_once(STATE["all_deposits"])  # type: ignore[arg-type]
