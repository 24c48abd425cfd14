"""A backup run that fails, fails loudly and harms nothing; the next run succeeds by itself.

roles/backup's rvm_backup.py, run as its unit runs it, against a real restic repository
served by `rclone serve restic --append-only --private-repos` over TLS on loopback (what
roles/backup_server runs on the backup host), with the app's own `rvm-detector spool
backup` taking the spool snapshot. For each fault (a wrong repository password, the backup
host unreachable, its disk full, the run stopped half-way): exit status 1, a log line that
names the cause, rvm_backup_last_run_ok 0 while the last success time stays, the earlier
snapshots intact; then the fault is repaired and the next run saves a snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "backup" / "files" / "rvm_backup.py"
MAINT = REPO / "roles" / "backup_server" / "files" / "rvm_backup_maint.py"
MODEL = REPO / "models" / "deposit-yolo11n" / "model.onnx"
USER, REST_PASSWORD, REPO_PASSWORD = "rvm-dev-1", "rest-secret-1", "repo-secret-1"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the full disk: root"),
    pytest.mark.skipif(
        not (shutil.which("restic") and shutil.which("rclone")),
        reason="restic and rclone from the distribution (make setup installs them)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """rclone serve restic on loopback, TLS, append-only, one private repository per user."""

    def __init__(self, root: Path, data: Path) -> None:
        self.root, self.data, self.port = root, data, free_port()
        self.cert, self.key = root / "server.crt", root / "server.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["rclone", "serve", "restic", str(self.data), "--append-only", "--private-repos",
             "--addr", f"127.0.0.1:{self.port}", "--cert", str(self.cert), "--key", str(self.key),
             "--user", USER, "--pass", REST_PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError("rclone serve restic did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Device:
    """What the backup unit sees on a device: a current release with its config and spool."""

    def __init__(self, root: Path, server: Server) -> None:
        self.root, self.server = root, server
        release = root / "opt" / "releases" / "r1"
        (release / "venv" / "bin").mkdir(parents=True)
        (release / "venv" / "bin" / "rvm-detector").symlink_to(
            Path(sys.executable).parent / "rvm-detector"
        )
        self.etc = root / "etc"
        self.etc.mkdir()
        key = self.etc / "platform-api-key"
        key.write_text("rvm_" + "k" * 60)
        key.chmod(0o600)
        config = {
            "camera": {"source": str(root / "frames")},
            "model": {"path": str(MODEL)},
            "platform": {"base_url": "https://platform.invalid", "api_key_file": str(key)},
            "spool": {"dir": str(root / "spool")},
        }
        (self.etc / "config.yml").write_text(yaml.safe_dump(config))
        (release / "config.yml").symlink_to(self.etc / "config.yml")
        (release / "release.json").write_text(json.dumps({"release": "r1"}))
        (root / "opt" / "current").symlink_to(release)
        self._spool_with_deposits(root / "spool", 20)
        self.password = root / "password"
        self.password.write_text(REPO_PASSWORD)
        self.textfile, self.state = root / "textfile", root / "state.json"
        self.textfile.mkdir()

    @staticmethod
    def _spool_with_deposits(directory: Path, n: int) -> None:
        from rvm_detector.records import DepositRecord, Detection, ModelId
        from rvm_detector.spool import Spool

        spool = Spool(directory)
        for i in range(n):
            spool.put(
                DepositRecord(
                    uuid=f"deposit-{i}",
                    camera="chute",
                    model=ModelId("yolo11n-rvm", "1", "ab" * 32),
                    detections=(Detection("pet_bottle", 0.9, (1.0, 2.0, 30.0, 40.0)),),
                    verdict="accept",
                    reason="pet_bottle 0.90",
                    jpeg=os.urandom(4096),
                    session_id="s",
                )
            )

    def env(self) -> dict[str, str]:
        url = f"rest:https://{USER}:{REST_PASSWORD}@127.0.0.1:{self.server.port}/{USER}/"
        return {
            **os.environ,
            "RESTIC_REPOSITORY": url,
            "RESTIC_PASSWORD_FILE": str(self.password),
            "RESTIC_CACHE_DIR": str(self.root / "cache"),
        }

    def argv(self, retries: int = 1) -> list[str]:
        return [
            sys.executable, str(SCRIPT), "--device-id", USER,
            "--staging", str(self.root / "staging"), "--path", str(self.etc),
            "--detector-root", str(self.root / "opt"), "--spool-user", "root",
            "--textfile-dir", str(self.textfile), "--state", str(self.state),
            "--cacert", str(self.server.cert), "--retries", str(retries), "--retry-delay", "0.5",
        ]  # fmt: skip

    def backup(self, retries: int = 1) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(retries), env=self.env(), capture_output=True, text=True, timeout=300
        )

    def metrics(self) -> dict[str, float]:
        text = (self.textfile / "rvm_backup.prom").read_text()
        return {
            name.removeprefix("rvm_backup_"): float(value)
            for name, value in (line.split() for line in text.splitlines() if line[:1] != "#")
        }

    def snapshots(self) -> list[str]:
        proc = subprocess.run(
            ["restic", "--cacert", str(self.server.cert), "snapshots", "--json"],
            env=self.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return [s["id"] for s in json.loads(proc.stdout)]


@pytest.fixture
def lab(tmp_path: Path):
    """A backup host whose repository disk is a 48 MiB tmpfs, and a device that backed up once."""
    data = tmp_path / "repos"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(data)], check=True)
    server = Server(tmp_path, data)
    server.start()
    device = Device(tmp_path / "device", server)
    try:
        first = device.backup()
        assert first.returncode == 0, first.stderr
        yield server, device
    finally:
        server.stop()
        subprocess.run(["umount", str(data)], check=True)


def assert_failed_loudly(
    run: subprocess.CompletedProcess[str], device: Device, before: dict, cause: str
) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED" in run.stderr and cause in run.stderr.lower(), run.stderr
    metrics = device.metrics()
    assert metrics["last_run_ok"] == 0
    assert metrics["last_success_timestamp_seconds"] == before["last_success_timestamp_seconds"]


def assert_next_run_succeeds(device: Device, snapshots_before: list[str]) -> None:
    run = device.backup()
    assert run.returncode == 0, run.stderr
    assert device.metrics()["last_run_ok"] == 1
    after = device.snapshots()
    assert set(snapshots_before) < set(after), "an earlier snapshot is gone"
    assert len(after) == len(snapshots_before) + 1


def test_a_wrong_repository_password(lab) -> None:
    _, device = lab
    before, snapshots = device.metrics(), device.snapshots()
    device.password.write_text("not-the-password")
    run = device.backup()
    assert_failed_loudly(run, device, before, "wrong password")
    device.password.write_text(REPO_PASSWORD)
    assert_next_run_succeeds(device, snapshots)


def test_the_backup_host_unreachable(lab) -> None:
    server, device = lab
    before, snapshots = device.metrics(), device.snapshots()
    server.stop()
    run = device.backup()
    assert_failed_loudly(run, device, before, "connection refused")
    server.start()
    assert_next_run_succeeds(device, snapshots)


def test_the_repository_disk_full(lab) -> None:
    _, device = lab
    before, snapshots = device.metrics(), device.snapshots()
    big = device.etc / "big.bin"  # incompressible, larger than what is left on the disk
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    # One attempt: restic itself retries each failed upload for about a minute first.
    run = device.backup(retries=0)
    assert_failed_loudly(run, device, before, "restic backup failed")
    big.unlink()
    assert_next_run_succeeds(device, snapshots)


def test_a_run_stopped_half_way(lab) -> None:
    server, device = lab
    before, snapshots = device.metrics(), device.snapshots()
    big = device.etc / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    proc = subprocess.Popen(
        device.argv(), env=device.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    # Freeze the backup host the moment restic starts, so the run is caught half-way on any
    # machine (a fast one uploads all 24 MiB within a second), then stop it as systemd does:
    # SIGTERM to the unit's processes. The host resumes only once the run is being stopped.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "restic.* backup "],
                              capture_output=True)  # fmt: skip
        if busy.returncode == 0:
            break
        time.sleep(0.02)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(1)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=60)
    run = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_failed_loudly(run, device, before, "interrupted (sigterm)")
    assert device.snapshots() == snapshots, "a stopped run must not leave a snapshot"
    big.unlink()
    assert_next_run_succeeds(device, snapshots)


def test_prune_and_check_on_the_backup_host(lab, tmp_path: Path) -> None:
    """The backup host's two runs report the device's repository, and their textfiles never
    hold one series twice (the node exporter would drop it and log an error every scrape)."""
    _, device = lab
    passwords, textfile = tmp_path / "passwords", tmp_path / "backup-host-textfile"
    passwords.mkdir()
    textfile.mkdir()
    (passwords / USER).write_text(REPO_PASSWORD)
    for action in ("check", "prune"):
        proc = subprocess.run(
            [sys.executable, str(MAINT), action, "--data-dir", str(tmp_path / "repos"),
             "--passwords-dir", str(passwords), "--user", "root", "--textfile-dir", str(textfile)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{action} of repository {USER}: ok" in proc.stdout
    series = dict(
        line.split()
        for prom in sorted(textfile.glob("*.prom"))
        for line in prom.read_text().splitlines()
        if line and not line.startswith("#")
    )
    lines = sum(len(p.read_text().splitlines()) for p in textfile.glob("*.prom"))
    assert len(series) == lines, "a series is in both textfiles"
    for action in ("check", "prune"):
        assert series[f'rvm_backup_repository_{action}_ok{{repository="{USER}"}}'] == "1"
        snapshots = f'rvm_backup_repository_snapshots{{action="{action}",repository="{USER}"}}'
        assert int(series[snapshots]) == len(device.snapshots())
