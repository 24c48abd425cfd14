#!/usr/bin/python3
"""One backup run of an RVM device to its restic repository (roles/backup).

Stages what the device cannot rebuild under --staging: a consistent spool snapshot
(`rvm-detector spool backup`, run as the spool's owner), the release records (which
release is current, its release.json with the model hashes) and identity.json; then
`restic backup` of the staging directory and --path (the configuration). A failed attempt
is retried --retries times; every run ends by writing node exporter textfile metrics
atomically, so a failure is visible as rvm_backup_last_run_ok 0 while the last success
time stays what it was. Exit status 0 only when a snapshot was saved. A run stopped by
SIGTERM (systemctl stop, shutdown) stops restic, is not retried, and is recorded as failed.

restic reads RESTIC_REPOSITORY and RESTIC_PASSWORD_FILE from the environment (the unit's
EnvironmentFile, 0600).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

METRICS_FILE = "rvm_backup.prom"


class BackupError(RuntimeError):
    pass


class Interrupted(Exception):
    """SIGTERM: subprocess.run stops restic on the way out; nothing is retried."""


def _interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def render_metrics(state: dict[str, float], run_ok: bool, run_at: float, duration: float) -> str:
    """The textfile for the node exporter (names: monitoring/rules/backup.yml)."""
    gauges = [
        ("last_run_ok", "1 when the last run saved a snapshot, 0 when it failed", int(run_ok)),
        ("last_run_timestamp_seconds", "Unix time the last run ended", run_at),
        ("last_run_duration_seconds", "How long the last run took, all attempts", duration),
        (
            "last_success_timestamp_seconds",
            "Unix time the last successful run ended",
            state.get("last_success", 0),
        ),
        (
            "last_success_bytes_added",
            "Bytes the last successful run added to the repository",
            state.get("bytes_added", 0),
        ),
        ("snapshots", "This device's snapshots after the last success", state.get("snapshots", 0)),
        (
            "spool_deposits",
            "Deposits in the spool snapshot of the last success",
            state.get("deposits", 0),
        ),
    ]
    lines = []
    for name, text, value in gauges:
        lines += [
            f"# HELP rvm_backup_{name} {text}.",
            f"# TYPE rvm_backup_{name} gauge",
            f"rvm_backup_{name} {float(value):.3f}",
        ]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackupError(f"{what} failed (exit {proc.returncode}): {' | '.join(detail)}")
    return proc.stdout


def stage(args: argparse.Namespace) -> int:
    """Spool snapshot, release records and identity into the staging directory."""
    current = Path(args.detector_root) / "current"
    if not current.is_symlink():
        raise BackupError(f"{current} does not exist: no detector release to back up yet")
    out = _run(
        [
            "/usr/bin/setpriv",
            f"--reuid={args.spool_user}",
            f"--regid={args.spool_user}",
            "--init-groups",
            str(current / "venv/bin/rvm-detector"),
            "spool",
            "--config",
            str(current / "config.yml"),
            "backup",
            "--json",
            str(Path(args.staging) / "spool"),
        ],
        "the spool snapshot (rvm-detector spool backup)",
    )
    spool = json.loads(out)
    device = Path(args.staging) / "device"
    device.mkdir(mode=0o750, exist_ok=True)
    release = os.readlink(current)
    record = current / "release.json"
    identity = {
        "device_id": args.device_id,
        "hostname": socket.gethostname(),
        "machine_id": Path("/etc/machine-id").read_text().strip(),
        "release": Path(release).name,
        "release_record": json.loads(record.read_text()) if record.is_file() else None,
    }
    write_atomically(device / "identity.json", json.dumps(identity, indent=2, sort_keys=True))
    return int(spool["deposits"])


def restic(args: argparse.Namespace, *rest: str) -> list[str]:
    return [args.restic, "--cacert", args.cacert, *rest]


def ensure_repository(args: argparse.Namespace) -> None:
    proc = subprocess.run(restic(args, "cat", "config"), capture_output=True, text=True)
    if proc.returncode == 0:
        return
    if "Is there a repository at the following location?" not in proc.stderr:
        detail = proc.stderr.strip().splitlines()[-2:]
        raise BackupError(f"cannot open the repository: {' | '.join(detail)}")
    print("repository does not exist yet: initialising it", flush=True)
    _run(restic(args, "init"), "restic init")


def backup(args: argparse.Namespace) -> tuple[int, str]:
    out = _run(
        restic(
            args,
            "backup",
            "--json",
            "--host",
            args.device_id,
            "--tag",
            "rvm-device",
            args.staging,
            *args.path,
        ),
        "restic backup",
    )
    for line in reversed(out.splitlines()):
        with_type = json.loads(line) if line.startswith("{") else {}
        if with_type.get("message_type") == "summary":
            return int(with_type.get("data_added", 0)), str(with_type.get("snapshot_id", ""))
    raise BackupError("restic backup printed no summary")


def count_snapshots(args: argparse.Namespace) -> int:
    out = _run(restic(args, "snapshots", "--json", "--host", args.device_id), "restic snapshots")
    return len(json.loads(out) or [])


def attempts(args: argparse.Namespace, state: dict, state_path: Path) -> tuple[bool, dict]:
    """Up to 1 + --retries attempts; (saved?, the state to report)."""
    for attempt in range(1, args.retries + 2):
        try:
            deposits = stage(args)
            ensure_repository(args)
            added, snapshot_id = backup(args)
            snapshots = count_snapshots(args)
        except (BackupError, OSError, ValueError) as e:
            print(
                f"backup attempt {attempt}/{args.retries + 1} of {args.device_id} failed: {e}",
                file=sys.stderr,
                flush=True,
            )
            if attempt <= args.retries:
                time.sleep(args.retry_delay)
            continue
        state = {
            "last_success": time.time(),
            "bytes_added": added,
            "snapshots": snapshots,
            "deposits": deposits,
            "snapshot_id": snapshot_id,
        }
        write_atomically(state_path, json.dumps(state, sort_keys=True))
        print(
            f"backup of {args.device_id} saved snapshot {snapshot_id}: {deposits} spooled "
            f"deposit(s), {added} bytes added, {snapshots} snapshot(s) in the repository",
            flush=True,
        )
        return True, state
    return False, state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device-id", required=True)
    p.add_argument("--staging", required=True)
    p.add_argument("--path", action="append", default=[], help="also back up (repeatable)")
    p.add_argument("--detector-root", default="/opt/rvm-detector")
    p.add_argument("--spool-user", default="rvm")
    p.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter")
    p.add_argument("--state", default="/var/lib/rvm-backup/state.json")
    p.add_argument("--restic", default="/usr/bin/restic")
    p.add_argument("--cacert", required=True)
    p.add_argument("--retries", type=int, default=2, help="attempts after the first")
    p.add_argument("--retry-delay", type=float, default=60.0)
    args = p.parse_args(argv)

    state_path = Path(args.state)
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    started = time.monotonic()
    ok = False
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        ok, state = attempts(args, state, state_path)
    except Interrupted as e:
        print(f"backup of {args.device_id} interrupted ({e})", file=sys.stderr, flush=True)
    duration = time.monotonic() - started
    write_atomically(
        Path(args.textfile_dir) / METRICS_FILE, render_metrics(state, ok, time.time(), duration)
    )
    if not ok:
        print(
            f"backup of {args.device_id} FAILED; the previous snapshots are untouched; "
            "the next timer run tries again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
