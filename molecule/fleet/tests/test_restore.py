"""The restore drill: a device's backup brings a wiped board back with everything it had.

The last device of the scenario takes deposits while the platform stand-in is down (they
wait in its spool), a backup runs while deposits keep arriving, then the board is
destroyed (services stopped; configuration, spool and backup state wiped; the releases
and models are kept, which the controller would rebuild anyway, to keep the drill short: a
full wipe is timed by molecule/fleet/bench_backup.py) and
restored with lab/restore.yml (the production playbooks/restore.yml behind the lab's group
settings), which converges it like any device. When the platform comes back, every deposit
the device acknowledged before the backup started reaches it exactly once; the restored
configuration is byte-identical, the restored spool passes PRAGMA integrity_check, and the
device's own credentials cannot delete a snapshot. Runs after the other fleet tests (file
order); the time from destruction to a ready device is recorded in .cache/fleet-timings.jsonl.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts, Run  # noqa: E402
from labtools import playbook as run_playbook  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
DEVICE = sorted(HOSTS.groups["jetson"])[-1]
OTHERS = [h for h in sorted(HOSTS.groups["jetson"]) if h != DEVICE]
PLATFORM = HOSTS.groups["platform"][0]
RESTORE_PLAY = REPO / "lab" / "restore.yml"
TIMINGS = REPO / ".cache" / "fleet-timings.jsonl"
RESTIC = "set -a; . /etc/rvm-backup/backup.env; set +a; restic --cacert /etc/rvm-backup/ca.crt"
STATE: dict[str, object] = {}
ssh = HOSTS.ssh
py = HOSTS.py
ready, deposit, platform_admin = HOSTS.ready, HOSTS.deposit, HOSTS.platform_admin


def restore(*args: str) -> Run:
    return run_playbook(RESTORE_PLAY, INVENTORY_FILE.parent, "-l", DEVICE, *args, timeout=1200)


def record_timing(what: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    with TIMINGS.open("a") as f:
        f.write(json.dumps({"what": what, "seconds": round(seconds, 1), "at": time.time()}) + "\n")


def config_digests() -> dict[str, str]:
    out = ssh(
        DEVICE, "cd /etc/rvm-detector && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    )
    return dict(reversed(line.split(None, 1)) for line in out.stdout.splitlines())


def snapshots() -> list[dict]:
    return json.loads(ssh(DEVICE, f"{RESTIC} snapshots --json").stdout or "[]")


def test_backup_while_the_platform_is_down_and_deposits_keep_arriving() -> None:
    platform_admin("/admin/faults", {"down": True})
    STATE["platform_down"] = True
    before = [deposit(DEVICE) for _ in range(5)]
    during: list[str] = []
    stop = threading.Event()

    def keep_depositing() -> None:
        while not stop.is_set():
            during.append(deposit(DEVICE))

    writer = threading.Thread(target=keep_depositing)
    writer.start()
    try:
        time.sleep(1)
        acked_before_backup = before + list(during)
        started = time.monotonic()
        run = ssh(DEVICE, "systemctl start rvm-backup.service", check=False, timeout=600)
        backup_s = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    log = ssh(DEVICE, "journalctl -u rvm-backup.service -n 20 --no-pager").stdout
    assert run.returncode == 0, log
    assert len(during) > len(acked_before_backup) - len(before), "deposits arrived during it"
    prom = ssh(DEVICE, "cat /var/lib/prometheus/node-exporter/rvm_backup.prom").stdout
    assert re.search(r"^rvm_backup_last_run_ok 1\.0+$", prom, re.M), prom
    assert re.search(r"^rvm_backup_snapshots [1-9]", prom, re.M), prom
    last = float(re.search(r"^rvm_backup_last_success_timestamp_seconds (\S+)", prom, re.M)[1])
    assert time.time() - last < 120
    record_timing("backup of one device while deposits arrive", backup_s)
    STATE.update(
        acked=acked_before_backup, during=during, digests=config_digests(), snaps=snapshots()
    )


def test_the_device_cannot_delete_or_rewrite_its_snapshots() -> None:
    snaps: list[dict] = STATE["snaps"]  # type: ignore[assignment]
    assert snaps, "no snapshot to protect"
    # A device may add snapshots: one more (another host name, so the restore's `latest` of
    # this device is still its backup) gives a forget policy something it would remove.
    ssh(DEVICE, f"{RESTIC} backup --host drill-{DEVICE} /etc/hostname")
    before = [s["id"] for s in snapshots()]
    assert len(before) >= 2
    # A forget policy with --prune removes snapshots before any data, so its refusal is this
    # one's (restic retries each refused removal for about 45 s before it gives up).
    forget = ssh(DEVICE, f"{RESTIC} forget {snaps[-1]['short_id']}", check=False)
    assert forget.returncode != 0, forget.stdout
    assert "403" in forget.stdout + forget.stderr, "refused by the server, not failed otherwise"
    assert [s["id"] for s in snapshots()] == before, "a snapshot went"


def test_the_device_cannot_read_another_devices_repository() -> None:
    if not OTHERS:
        return
    other = OTHERS[0]
    # The device's own credentials, pointed at the other device's repository (exit 99: the
    # URL was not rewritten, so the check would prove nothing).
    cmd = (
        "set -a; . /etc/rvm-backup/backup.env; set +a; "
        f"RESTIC_REPOSITORY=$(echo $RESTIC_REPOSITORY | sed 's#/{DEVICE}/$#/{other}/#'); "
        f'case "$RESTIC_REPOSITORY" in */{other}/) ;; *) exit 99 ;; esac; '
        "restic --cacert /etc/rvm-backup/ca.crt snapshots"
    )
    proc = ssh(DEVICE, cmd, check=False)
    assert proc.returncode not in (0, 99), proc.stdout + proc.stderr
    assert other not in proc.stdout


def test_restore_lists_snapshots_and_refuses_bad_requests() -> None:
    listed = restore("-e", f"restore_from={DEVICE}", "-e", "restore_list=true")
    assert listed.ok, listed.text[-3000:]
    assert STATE["snaps"][-1]["short_id"] in listed.text  # type: ignore[index]

    missing = restore("-e", f"restore_from={DEVICE}", "-e", "snapshot=deadbeef")
    assert not missing.ok
    assert (
        f"{DEVICE}: cannot restore snapshot deadbeef of {DEVICE} onto {DEVICE}: the repository "
        f"of {DEVICE} holds no such snapshot"
    ) in missing.text, missing.text[-3000:]

    not_a_device = run_playbook(
        RESTORE_PLAY, INVENTORY_FILE.parent, "-l", PLATFORM, "-e", f"restore_from={DEVICE}"
    )
    assert not not_a_device.ok
    assert f"{PLATFORM}: cannot restore snapshot latest of {DEVICE} onto {PLATFORM}" in (
        not_a_device.text
    )
    assert f"{PLATFORM} is not a device" in not_a_device.text, not_a_device.text[-3000:]

    # The spool still holds the deposits the platform has not taken.
    busy = restore("-e", f"restore_from={DEVICE}")
    assert not busy.ok
    assert re.search(r"/var/lib/rvm-detector/spool still holds \d+ deposit\(s\)", busy.text), (
        busy.text[-3000:]
    )
    assert ready(DEVICE), "a refused restore leaves the device running"

    # A snapshot in the repository that is another device's (the device's credentials can add one).
    foreign = ssh(DEVICE, f"{RESTIC} backup --json --host not-{DEVICE} /etc/hostname").stdout
    summary = next(json.loads(x) for x in foreign.splitlines() if '"summary"' in x)
    foreign_id = summary["snapshot_id"]
    wrong = restore("-e", f"restore_from={DEVICE}", "-e", f"snapshot={foreign_id[:8]}")
    assert not wrong.ok
    assert f"belongs to device not-{DEVICE}, not {DEVICE}" in wrong.text, wrong.text[-3000:]


def test_a_destroyed_device_is_restored_and_its_deposits_reach_the_platform_once() -> None:
    snapshot_id = STATE["snaps"][-1]["short_id"]  # type: ignore[index]
    destroyed = time.monotonic()
    ssh(
        DEVICE,
        "systemctl stop rvm-backup.timer rvm-detector rvm-tegrastats-exporter; "
        "rm -rf /etc/rvm-detector /etc/rvm-backup /var/lib/rvm-backup "
        "/var/lib/rvm-detector/spool /var/lib/rvm-detector/backup",
    )
    proc = restore("-e", f"restore_from={DEVICE}", "-e", f"snapshot={snapshot_id}")
    assert proc.ok, proc.text[-4000:]
    assert f"{DEVICE}: restored snapshot {snapshot_id} of {DEVICE}" in proc.text
    deadline = time.monotonic() + 120
    while not ready(DEVICE):
        assert time.monotonic() < deadline, f"{DEVICE} never became ready after the restore"
        time.sleep(1)
    record_timing(
        "restore: destroyed device to ready (restore.yml + converge)", time.monotonic() - destroyed
    )

    assert config_digests() == STATE["digests"], "restored configuration differs"
    check = ssh(
        DEVICE,
        'setpriv --reuid=rvm --regid=rvm --init-groups python3 -c "import sqlite3; '
        "c = sqlite3.connect('file:/var/lib/rvm-detector/spool/spool.db?mode=ro', uri=True); "
        "print(c.execute('PRAGMA integrity_check').fetchone()[0], "
        "c.execute('SELECT COUNT(*) FROM deposits').fetchone()[0])\"",
    ).stdout.split()
    assert check[0] == "ok" and int(check[1]) >= len(STATE["acked"]), check  # type: ignore[arg-type]

    platform_admin("/admin/faults", {"reset": True})
    STATE["platform_down"] = False
    HOSTS.assert_delivered_once(STATE["acked"], timeout_s=180)  # type: ignore[arg-type]
    # Those taken while the backup ran: in the snapshot or lost (the RPO), never doubled.
    assert all(c <= 1 for c in HOSTS.stored_counts(STATE["during"]).values())  # type: ignore[arg-type]


def test_the_restored_device_backs_up_again() -> None:
    if STATE.get("platform_down"):
        platform_admin("/admin/faults", {"reset": True})
    run = ssh(DEVICE, "systemctl start rvm-backup.service", check=False, timeout=600)
    assert run.returncode == 0, ssh(DEVICE, "journalctl -u rvm-backup -n 20 --no-pager").stdout
    assert len(snapshots()) > len(STATE["snaps"])  # type: ignore[arg-type]


def test_backups_and_repository_checks_reach_prometheus() -> None:
    """What the backup alerts read is scraped: each device's last run, and the backup host's
    check of every device's repository (its node exporter, job node)."""
    backup_host = HOSTS.groups["backup"][0]
    monitor = HOSTS.groups["monitoring"][0]
    run = ssh(backup_host, "systemctl start rvm-backup-check.service", check=False, timeout=600)
    assert run.returncode == 0, ssh(backup_host, "journalctl -u rvm-backup-check -n 20").stdout

    def series(expr: str) -> dict[str, str]:
        result = HOSTS.monitoring_api(monitor, f":9090/api/v1/query?query={quote(expr)}")
        return {
            r["metric"].get("repository") or r["metric"]["device"]: r["value"][1]
            for r in result["result"]
        }  # type: ignore[index]

    deadline = time.monotonic() + 120
    while True:
        checks = series(f'rvm_backup_repository_check_ok{{device="{backup_host}",job="node"}}')
        runs = series('rvm_backup_last_run_ok{job="node"}')
        if (checks.get(DEVICE) == "1" and runs.get(DEVICE) == "1") or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert checks.get(DEVICE) == "1", f"repository checks scraped: {checks}"
    assert runs.get(DEVICE) == "1", f"device backups scraped: {runs}"
