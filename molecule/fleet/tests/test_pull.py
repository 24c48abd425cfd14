"""Pull mode in the lab: a device converged by push, switched to pull, converges itself.

The device in group `pull` (fleet-dev-2, ring canary) got pull mode from Molecule's push
converge (inventories/lab/group_vars/pull.yml). lab/git_publish.py plays the release
engineer: it commits this working tree (and the lab's hosts as inventories/lab-pull),
signs it with the lab's release key and pushes it to ring/canary on the lab's git server
(lab/roles/lab_git_server, on the platform host). The platform stand-in queues GIT_PULL;
the detector's heartbeat receives it and asks for a run; the device runs site.yml on
itself. One story, in file order:

  1. the first pull run changes nothing (pull and push make the same host);
  2. a signed release on the canary ring reaches the canary, ready, while the push device stays;
  3. a never-ready release is switched back by the device itself, then held (not retried);
  4. unsigned, and wrongly signed, commits are refused; nothing of them runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
ssh, ready, platform_admin = HOSTS.ssh, HOSTS.ready, HOSTS.platform_admin
PULL = HOSTS.groups["pull"][0]
PUSHED = [h for h in HOSTS.groups["jetson"] if h not in HOSTS.groups["pull"]]
PLATFORM = HOSTS.groups["platform"][0]
ROOT = "/opt/rvm-detector"
TIMINGS = REPO / ".cache" / "fleet-timings.jsonl"
STATE: dict[str, str] = {}


def record_timing(what: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    with TIMINGS.open("a") as f:
        f.write(json.dumps({"what": what, "seconds": round(seconds, 1), "at": time.time()}) + "\n")


def publish(*args: str, host_vars: dict | None = None) -> str:
    """A commit on ring/canary (signed unless ARGS say otherwise); its sha."""
    argv = [
        sys.executable, str(REPO / "lab" / "git_publish.py"), "publish",
        "--lab-dir", str(HOSTS.key_file(PULL).parent), "--inventory", str(INVENTORY_FILE),
        "--pull-host", PULL, "--server", HOSTS.hostvars[PLATFORM]["ansible_host"],
        "--ssh-key", str(HOSTS.key_file(PULL)), "--ring", "canary", *args,
    ]  # fmt: skip
    if host_vars is not None:
        path = INVENTORY_FILE.parent / f"pull-host-vars-{len(STATE)}.yml"
        path.write_text(yaml.safe_dump(host_vars))
        argv += ["--host-vars", f"{PULL}={path}"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def pull_state() -> dict:
    """The device's /var/lib/rvm-pull/state.json ({} before its first run)."""
    return json.loads(ssh(PULL, "cat /var/lib/rvm-pull/state.json 2>/dev/null || echo {}").stdout)


def current(host: str) -> str:
    return ssh(host, f"readlink {ROOT}/current").stdout.strip().removeprefix("releases/")


def releases(host: str) -> list[str]:
    return ssh(host, f"ls {ROOT}/releases").stdout.split()


def metric(name: str) -> str:
    return ssh(PULL, f"grep '^{name}' /var/lib/prometheus/node-exporter/rvm_pull.prom").stdout


def runs(result: str) -> int:
    """rvm_pull_runs_total{result=RESULT}, as the node exporter serves it."""
    line = [x for x in metric("rvm_pull_runs_total").splitlines() if f'"{result}"' in x]
    return int(line[0].split()[-1]) if line else 0


def run_now() -> dict:
    """One run as the timer starts it (not forced); the state it leaves."""
    ssh(PULL, "systemctl start rvm-pull.service", check=False, timeout=900)
    return pull_state()


def git_pull(commit: str, timeout_s: float) -> tuple[dict, float]:
    """Queue GIT_PULL on the platform, wait for the run at COMMIT to end; (state, seconds)."""
    runs_before = sum(pull_state().get("counts", {}).values())
    STATE["queued_at"] = platform_now().isoformat()
    start = time.monotonic()
    platform_admin("/admin/commands", {"hardware_id": PULL, "action": "GIT_PULL"})
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        state = pull_state()
        last = state.get("last") or {}
        if sum(state.get("counts", {}).values()) > runs_before and last.get("commit") == commit:
            return state, time.monotonic() - start
        time.sleep(3)
    raise AssertionError(
        f"no pull run at {commit[:12]} ended within {timeout_s}s of GIT_PULL:\n"
        + ssh(PULL, "journalctl -u rvm-pull -n 40 --no-pager", check=False).stdout
    )


def heartbeat_version_after(at: str) -> str:
    """The version of the pull device's first heartbeat received after AT (platform time)."""
    beats = [b for b in platform_admin("/admin/heartbeats") if b["hardware_id"] == PULL]
    later = [b for b in beats if datetime.fromisoformat(b["at"]) > datetime.fromisoformat(at)]
    assert later, f"no heartbeat from {PULL} after {at}"
    return later[0]["body"]["version"]


def platform_now() -> datetime:
    return datetime.fromtimestamp(float(ssh(PLATFORM, "date +%s.%N").stdout), timezone.utc)


def test_a_device_converged_by_push_then_switched_to_pull_reports_no_changes() -> None:
    assert ssh(PULL, "systemctl is-enabled rvm-pull.timer rvm-pull.path").stdout.split() == [
        "enabled",
        "enabled",
    ]
    before = current(PULL)
    commit = publish()
    start = time.monotonic()
    last = run_now()["last"]  # as the timer runs it: a new commit on the ring, not forced
    assert last["result"] == "applied" and last["commit"] == commit, last
    assert not last["forced"]
    # The run's own PLAY RECAP, as rvm_pull.py read it: pull and push make the same host.
    assert last["message"].endswith(" 0 changed"), last["message"]
    assert current(PULL) == before and ready(PULL)
    record_timing("pull: first pull run of site.yml on the device (no changes)",
                  time.monotonic() - start)  # fmt: skip
    # The timer's next run finds the ring where it was: nothing started.
    assert run_now()["last"]["result"] == "unchanged"
    STATE["base"] = commit


def test_a_signed_release_on_the_canary_ring_reaches_the_canary_while_others_stay() -> None:
    others = {h: current(h) for h in PUSHED}
    before = current(PULL)
    applied_before = runs("applied")
    commit = publish("--message", "release: 4 fps", host_vars={
        "detector_app_config_extra": {"camera": {"fps": 4}, "model": {"threads": 1},
                                      "platform": {"upload": {"backoff_max_s": 30}}}})  # fmt: skip
    state, seconds = git_pull(commit, timeout_s=900)
    assert state["last"]["result"] == "applied" and state["last"]["forced"], state["last"]
    record_timing("pull: GIT_PULL queued to the canary ready on a new release", seconds)
    new = current(PULL)
    assert new != before and ready(PULL)
    assert "fps: 4" in ssh(PULL, f"cat {ROOT}/current/config.yml").stdout
    assert {h: current(h) for h in PUSHED} == others, "a device on no pull ring must not move"
    assert runs("applied") == applied_before + 1
    STATE["good"], STATE["good_release"] = commit, new


def test_a_never_ready_release_is_switched_back_by_the_device_and_held() -> None:
    commit = publish("--message", "release: a camera that never delivers", host_vars={
        "detector_app_camera_source": "/dev/video-that-never-delivers",
        "detector_app_ready_timeout_s": 20})  # fmt: skip
    state, _ = git_pull(commit, timeout_s=900)
    # What the platform saw: the heartbeat that fetched this GIT_PULL named the ring, the
    # commit the device ran and how its last run ended (the good release, applied).
    version = heartbeat_version_after(STATE["queued_at"])
    assert version.endswith(f"ring/canary@{STATE['good'][:12]} applied"), version
    assert state["last"]["result"] == "failed", state["last"]
    assert "not retried until the ring moves" in state["last"]["message"]
    assert current(PULL) == STATE["good_release"] and ready(PULL)
    bad = [r for r in releases(PULL) if r not in (STATE["good_release"],)]
    assert bad, "the bad release is kept for inspection"
    journal = ssh(PULL, "journalctl -u rvm-pull -n 400 --no-pager").stdout
    assert "did not become ready" in journal
    # The timer's next run leaves the failed commit alone: held, in the state and the metric.
    state = run_now()
    assert state["last"]["result"] == "held" and state["last"]["commit"] == commit
    assert metric("rvm_pull_held").split()[-1] == "1"
    assert state["applied"]["commit"] == STATE["good"]
    STATE["bad"] = commit


def test_unsigned_and_wrongly_signed_commits_are_refused() -> None:
    release = current(PULL)
    refused_before = runs("refused")
    for how in ("--unsigned", "--foreign-key"):
        commit = publish(how, "--message", f"release: {how}", host_vars={
            "detector_app_config_extra": {"camera": {"fps": 3}}})  # fmt: skip
        last = run_now()["last"]
        assert last["result"] == "refused" and last["commit"] == commit, last
        assert current(PULL) == release and ready(PULL)
        # Never checked out, so nothing of it ran.
        head = ssh(PULL, "git -C /var/lib/rvm-pull/checkout rev-parse HEAD").stdout.strip()
        assert head == STATE["bad"]
    assert runs("refused") == refused_before + 2
    journal = ssh(PULL, "journalctl -u rvm-pull -n 50 --no-pager").stdout
    assert "refused" in journal
