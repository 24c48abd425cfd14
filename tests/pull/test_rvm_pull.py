"""A device's pull run (roles/pull_mode's rvm_pull.py) against a real git repository with
real GnuPG signatures and the real ansible-pull: signed commits of the ring are applied once,
unsigned or foreign-signed ones are refused, a failed commit is held and not retried in a
loop, the platform's GIT_PULL forces a run, and every outcome reaches the state file the
heartbeat reads and the node exporter's textfile.

The repository's playbook is a small stand-in for site.yml (it writes the commit's release
name where the test reads it, or fails): what is under test is which commits reach it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "pull_mode" / "files" / "rvm_pull.py"
ANSIBLE_PULL = Path(sys.executable).parent / "ansible-pull"
RING = "ring/canary"

pytestmark = pytest.mark.skipif(
    not (shutil.which("git") and shutil.which("gpg") and ANSIBLE_PULL.exists()),
    reason="git and gpg from the distribution, ansible-core in the venv (make setup)",
)

PLAYBOOK = """\
- name: Stand-in for site.yml
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail where this commit says so
      ansible.builtin.fail:
        msg: this release never becomes ready
      when: lookup('ansible.builtin.file', playbook_dir ~ '/release.txt') == 'never-ready'
    - name: Hang where this commit says so
      ansible.builtin.command: sleep 120
      when: lookup('ansible.builtin.file', playbook_dir ~ '/release.txt') == 'hangs'
      changed_when: false
    - name: Record which commit ran
      ansible.builtin.shell: (cat {{ playbook_dir }}/release.txt; echo) >> {{ marker }}
      changed_when: true
"""


def gpg_key(home: Path, name: str) -> str:
    home.mkdir(mode=0o700)
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.invalid>",
         "ed25519", "sign", "1d"],
        check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


class Upstream:
    """The fleet's repository: commits to the ring's branch, signed by the release key or not."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "upstream"
        self.signer_home = root / "release-key"
        self.signer = gpg_key(self.signer_home, "release")
        self.stranger_home = root / "stranger-key"
        self.stranger = gpg_key(self.stranger_home, "stranger")
        self.dir.mkdir()
        self.git("init", "--quiet", "-b", RING)
        (self.dir / "inventory").mkdir()
        (self.dir / "inventory" / "hosts.yml").write_text(
            "all:\n  hosts:\n    rvm-test:\n      ansible_connection: local\n"
            f"      ansible_python_interpreter: {sys.executable}\n"
        )
        (self.dir / "site.yml").write_text(PLAYBOOK)

    def git(self, *argv: str, home: Path | None = None) -> str:
        who = {"NAME": "release", "EMAIL": "release@example.invalid"}
        env = {**os.environ, "GNUPGHOME": str(home or self.signer_home)}
        env |= {f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()}
        return subprocess.run(
            ["git", "-C", str(self.dir), *argv], env=env, check=True, capture_output=True,
            text=True,
        ).stdout.strip()  # fmt: skip

    def commit(self, release: str, signed_by: str | None = "release") -> str:
        (self.dir / "release.txt").write_text(release)
        self.git("add", "-A")
        if signed_by is None:
            self.git("commit", "--quiet", "--no-gpg-sign", "-m", release)
        else:
            home = self.signer_home if signed_by == "release" else self.stranger_home
            key = self.signer if signed_by == "release" else self.stranger
            self.git("commit", "--quiet", f"--gpg-sign={key}", "-m", release, home=home)
        return self.git("rev-parse", "HEAD")


class Device:
    """What the pull unit runs on a device: its keyring holds the release key only."""

    def __init__(self, root: Path, upstream: Upstream) -> None:
        self.root, self.upstream = root / "device", upstream
        self.root.mkdir()
        self.gnupg = self.root / "gnupg"
        self.gnupg.mkdir(mode=0o700)
        public = subprocess.run(
            ["gpg", "--homedir", str(upstream.signer_home), "--armor", "--export",
             upstream.signer], check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["gpg", "--homedir", str(self.gnupg), "--batch", "--import"],
                       input=public, check=True, capture_output=True)  # fmt: skip
        self.marker, self.state = self.root / "ran.txt", self.root / "state.json"
        self.textfile, self.request = self.root / "textfile", self.root / "git-pull-request"
        self.textfile.mkdir()
        self.lock = self.root / "rvm-pull.lock"
        # What the push left for every pull run (/etc/rvm-pull/vars.json): here, the marker.
        self.vars = self.root / "vars.json"
        self.vars.write_text(json.dumps({"marker": str(self.marker)}))

    def pull(self, *extra: str, repo: str | None = None, run_timeout: int = 300):
        argv = [
            sys.executable, str(SCRIPT), "--repo", repo or f"file://{self.upstream.dir}",
            "--ref", RING, "--host", "rvm-test", "--inventory", "inventory/hosts.yml",
            "--ansible-pull", str(ANSIBLE_PULL), "--mirror", str(self.root / "mirror.git"),
            "--checkout", str(self.root / "checkout"), "--gnupg-home", str(self.gnupg),
            "--state", str(self.state), "--lock", str(self.lock),
            "--textfile-dir", str(self.textfile), "--request", str(self.request),
            "--run-timeout", str(run_timeout),
            "--fetch-timeout", "60", "--vars-file", str(self.vars), *extra,
        ]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, timeout=600)

    def ran(self) -> list[str]:
        return self.marker.read_text().split() if self.marker.exists() else []

    def last(self) -> dict:
        return json.loads(self.state.read_text())["last"]

    def metrics(self) -> dict[str, float]:
        text = (self.textfile / "rvm_pull.prom").read_text()
        rows = [line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#"]
        return {name: float(value) for name, value in rows}


@pytest.fixture
def lab(tmp_path: Path):
    upstream = Upstream(tmp_path)
    device = Device(tmp_path, upstream)
    yield upstream, device
    # gpg starts an agent per home directory, which outlives the test: stop each one.
    for home in (upstream.signer_home, upstream.stranger_home, device.gnupg):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True)  # fmt: skip


def test_a_signed_commit_is_applied_once_and_git_pull_forces_a_run(lab) -> None:
    upstream, device = lab
    first = upstream.commit("r1")
    run = device.pull()
    assert run.returncode == 0, run.stderr
    assert device.ran() == ["r1"]
    last = device.last()
    assert last["result"] == "applied" and last["commit"] == first
    assert f"signed by {upstream.signer}" in last["message"]
    assert last["message"].endswith("applied, 1 changed"), "the run's recap, read"
    assert json.loads(device.state.read_text())["applied"]["commit"] == first
    m = device.metrics()
    assert m["rvm_pull_last_run_ok"] == 1 and m['rvm_pull_runs_total{result="applied"}'] == 1
    assert m[f'rvm_pull_applied_info{{ring="{RING}",commit="{first[:12]}"}}'] == 1

    # The timer's next run: the ring has not moved, nothing runs.
    again = device.pull()
    assert again.returncode == 0, again.stderr
    assert device.ran() == ["r1"] and device.last()["result"] == "unchanged"

    # The platform's GIT_PULL (the detector touches the request file): a run at the same commit.
    device.request.touch()
    forced = device.pull()
    assert forced.returncode == 0, forced.stderr
    assert device.ran() == ["r1", "r1"] and device.last()["forced"] is True
    assert not device.request.exists()

    second = upstream.commit("r2")
    assert device.pull().returncode == 0
    assert device.ran() == ["r1", "r1", "r2"] and device.last()["commit"] == second


@pytest.mark.parametrize(
    ("signed_by", "why"),
    [
        (None, "it is not signed"),
        ("stranger", "signed by a key that is not in this device's keyring"),
    ],
)
def test_an_unsigned_or_foreign_commit_is_refused_and_the_device_keeps_what_it_has(
    lab, signed_by, why
) -> None:
    upstream, device = lab
    good = upstream.commit("r1")
    assert device.pull().returncode == 0
    bad = upstream.commit("evil", signed_by=signed_by)
    run = device.pull()
    assert run.returncode == 1
    assert device.ran() == ["r1"], "a refused commit must never run"
    last = device.last()
    assert last["result"] == "refused" and last["commit"] == bad and why in last["message"]
    assert why in run.stderr
    state = json.loads(device.state.read_text())
    assert state["applied"]["commit"] == good
    # Never checked out: the working copy is still the applied commit.
    head = subprocess.run(["git", "-C", str(device.root / "checkout"), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert head == good
    m = device.metrics()
    assert m["rvm_pull_last_run_ok"] == 0 and m['rvm_pull_runs_total{result="refused"}'] == 1


def test_a_failed_commit_is_held_not_retried_until_the_ring_moves(lab) -> None:
    upstream, device = lab
    upstream.commit("r1")
    assert device.pull().returncode == 0
    bad = upstream.commit("never-ready")
    run = device.pull()
    assert run.returncode == 1 and device.last()["result"] == "failed"
    assert "this release never becomes ready" in run.stderr  # ansible's own failure, logged
    attempts = len(device.ran())

    # The timer, and even the platform's GIT_PULL, leave the failed commit alone.
    for forced in (False, True):
        if forced:
            device.request.touch()
        held = device.pull()
        assert held.returncode == 1
        last = device.last()
        assert last["result"] == "held" and last["commit"] == bad
        assert "not retried" in last["message"]
    assert len(device.ran()) == attempts
    assert device.metrics()["rvm_pull_held"] == 1

    # An operator may ask for it once more, on purpose.
    retry = device.pull("--retry-failed")
    assert retry.returncode == 1 and device.last()["result"] == "failed"

    fixed = upstream.commit("r3")
    assert device.pull().returncode == 0
    assert device.ran()[-1] == "r3" and device.last()["commit"] == fixed
    state = json.loads(device.state.read_text())
    assert "failed" not in state and device.metrics()["rvm_pull_held"] == 0


def test_an_unreachable_repository_or_a_missing_ring_changes_nothing(lab, tmp_path) -> None:
    upstream, device = lab
    upstream.commit("r1")
    assert device.pull().returncode == 0
    gone = device.pull(repo=f"file://{tmp_path}/no-such-repository")
    assert gone.returncode == 1 and device.last()["result"] == "unreachable"
    assert "cannot fetch ring/canary" in device.last()["message"]
    upstream.git("branch", "-m", RING, "ring/elsewhere")
    missing = device.pull()
    assert missing.returncode == 1 and device.last()["result"] == "no_ref"
    assert "has no branch ring/canary" in device.last()["message"]
    assert device.ran() == ["r1"]
    upstream.git("branch", "-m", "ring/elsewhere", RING)
    back = device.pull()
    assert back.returncode == 0 and device.last()["result"] == "unchanged"


def test_a_second_run_while_one_runs_leaves_it_alone(lab) -> None:
    upstream, device = lab
    upstream.commit("r1")
    with open(device.lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = device.pull()
    assert busy.returncode == 1 and "another pull run holds the lock" in busy.stderr
    assert device.ran() == [] and device.last()["result"] == "busy"
    assert device.pull().returncode == 0 and device.ran() == ["r1"]


def test_a_run_that_hangs_is_stopped_at_its_timeout_and_held(lab) -> None:
    upstream, device = lab
    hangs = upstream.commit("hangs")
    start = time.monotonic()
    run = device.pull(run_timeout=10)
    assert run.returncode == 1
    assert time.monotonic() - start < 60, "the hung ansible-pull was not stopped"
    last = device.last()
    assert last["result"] == "failed" and last["commit"] == hangs
    assert "ran over 10.0s" in last["message"]
    # Nothing of the run goes on behind the result (ansible-playbook has a session of its own).
    left = subprocess.run(["pgrep", "-f", str(device.root / "checkout")], capture_output=True)
    assert left.returncode == 1, f"still running: {left.stdout!r}"
    assert device.pull().returncode == 1 and device.last()["result"] == "held"
