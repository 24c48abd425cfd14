"""Logs that never fill a disk, kept centrally: what an operator checks on the lab fleet.

Runs after converge (roles base, journal_remote on the monitoring host, journal_upload and
the detector on the devices). The lab caps a device's journal small
(inventories/lab/group_vars/all.yml) so that ten times the cap is written in seconds.
Steps run in file order; each leaves the fleet as it found it (the log host running).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, LabHosts, playbook  # noqa: E402

INVENTORY_FILE = Path(os.environ["MOLECULE_INVENTORY_FILE"])
HOSTS = LabHosts(INVENTORY_FILE)
ready = HOSTS.ready
ssh = HOSTS.ssh
DEVICE = HOSTS.groups["jetson"][0]
LOG_HOST = HOSTS.groups["monitoring"][0]
REMOTE_DIR = "/var/log/journal/remote"
LOG_SERVICE = [
    "journal-remote-tls.service",
    "systemd-journal-remote.socket",
    "systemd-journal-remote.service",
]
TIMINGS = REPO / ".cache" / "fleet-timings.jsonl"
UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

# Files under /var/log that logrotate rightly leaves alone: fixed-size databases indexed
# by uid, apt's overwritten solver dump, and debootstrap's one-off log of the lab's image.
NOT_ROTATED = {
    "/var/log/lastlog",
    "/var/log/faillog",
    "/var/log/apt/eipp.log.xz",
    "/var/log/bootstrap.log",
    # Rewritten whole by each run, so they never grow: chkrootkit's daily check (base) and,
    # on lab devices, the Lynis audit of test_hardening.py.
    "/var/log/chkrootkit/chkrootkit-daily.log",
    "/var/log/chkrootkit/log.today",
    "/var/log/chkrootkit/log.today.raw",
    "/var/log/lynis.log",
    "/var/log/lynis-report.dat",
}


def record_timing(what: str, seconds: float) -> None:
    TIMINGS.parent.mkdir(exist_ok=True)
    with TIMINGS.open("a") as f:
        f.write(json.dumps({"what": what, "seconds": round(seconds, 1), "at": time.time()}) + "\n")


def size_bytes(text: str) -> int:
    """'8M' (journald.conf) or '7.9M' (journalctl --disk-usage) in bytes."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?)B?", text.strip())
    assert m, f"not a size: {text!r}"
    return int(float(m.group(1)) * UNITS.get(m.group(2), 1))


def journald_setting(host: str, key: str) -> str:
    config = ssh(host, "systemd-analyze cat-config systemd/journald.conf").stdout
    values = re.findall(rf"^{key}=(\S+)", config, re.M)
    assert values, f"{host}: {key} is not set in journald.conf"
    return values[-1]


def disk_usage(host: str, directory: str = "") -> int:
    option = f"--directory={directory} " if directory else ""
    out = ssh(host, f"journalctl {option}--disk-usage").stdout
    return size_bytes(re.search(r"take up (\S+)", out).group(1))


def seqnum(host: str) -> int:
    """The journal's sequence number now: how many entries journald has written."""
    cursor = ssh(host, "journalctl -n 1 --show-cursor -q | tail -n 1").stdout
    return int(re.search(r"\bi=([0-9a-f]+)", cursor).group(1), 16)


def central_lines(identifier: str) -> list[str]:
    return ssh(
        LOG_HOST, f"journalctl --directory={REMOTE_DIR} -t {identifier} -o cat --no-pager"
    ).stdout.splitlines()


def test_every_file_log_is_rotated() -> None:
    """Every file a host writes under /var/log (outside the journal) has a logrotate rule."""
    for host in HOSTS.groups["all"]:
        assert ssh(host, "systemctl is-enabled logrotate.timer").stdout.strip() == "enabled", host
        files = set(
            ssh(
                host, "find /var/log -path /var/log/journal -prune -o -type f -print"
            ).stdout.split()
        )
        files = {f for f in files if not re.search(r"\.\d+(\.gz|\.xz)?$", f)} - NOT_ROTATED
        debug = ssh(host, "logrotate --debug /etc/logrotate.conf 2>&1").stdout
        patterns = re.findall(r"^considering log (\S+)$", debug, re.M)
        covered = ssh(
            host, "ls -d " + " ".join(patterns) + " 2>/dev/null", check=False
        ).stdout.split()
        assert files <= set(covered), (
            f"{host}: no logrotate rule for {sorted(files - set(covered))}"
        )


def test_a_flood_of_ten_times_the_cap_stays_within_it() -> None:
    """10x SystemMaxUse written to the journal: disk use stays under the cap, detector ready."""
    cap = size_bytes(journald_setting(DEVICE, "SystemMaxUse"))
    line = 300  # below journald's 512-byte compression threshold: stored as written
    lines = 10 * cap // line + 1
    unit = f"rvm-log-flood-{secrets.token_hex(4)}.service"
    before = seqnum(DEVICE)
    start = time.monotonic()
    # Its own unit with a rate limit far above the flood, so every line reaches the journal.
    # The unit waits for its last line to be stored: lines journald reads after a unit has
    # stopped fall back to the default rate limit (and are dropped beyond its burst).
    flood = (
        f"head -c {lines * (line - 1) * 3 // 4} /dev/urandom | base64 -w {line - 1};"
        " echo flood-end;"
        f" until journalctl _SYSTEMD_UNIT={unit} -n 1 -o cat | grep -qx flood-end; do sleep 1; done"
    )
    ssh(
        DEVICE,
        f"systemd-run --wait --quiet --unit={unit} -p LogRateLimitIntervalSec=1s"
        f" -p LogRateLimitBurst={lines * 10} sh -c {shlex.quote(flood)}",
        timeout=600,
    )
    stored_s = time.monotonic() - start
    written = seqnum(DEVICE) - before
    usage = disk_usage(DEVICE)
    record_timing(
        f"log flood of {lines * line / cap:.0f}x the journal cap ({lines} lines) in the journal",
        stored_s,
    )
    print(
        f"flood: {written} entries ({lines * line} bytes of lines) in the journal after"
        f" {stored_s:.1f}s; journal {usage} of cap {cap}"
    )
    assert written >= lines, f"only {written} of {lines} lines reached the journal"
    assert usage <= cap, f"{DEVICE}: the journal takes {usage} bytes, over its cap of {cap}"
    assert ready(DEVICE), f"{DEVICE}: the detector is not ready after the flood"


def test_the_detectors_rate_limit_drops_a_flood_from_its_unit() -> None:
    """Lines logged from inside rvm-detector.service beyond its burst are suppressed, counted."""
    since = ssh(DEVICE, "date +%s").stdout.strip()
    restarts = ssh(DEVICE, "systemctl show -P NRestarts rvm-detector").stdout.strip()
    flood = 50_000
    # Join the detector's cgroup (journald identifies the unit, and its limit, by the
    # sender's cgroup), then flood the journal from there.
    script = (
        "cg=$(systemctl show -P ControlGroup rvm-detector); "
        "for d in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do "
        '[ -w "$d$cg/cgroup.procs" ] && echo $$ > "$d$cg/cgroup.procs"; done; '
        f"exec systemd-cat -t rvm-detector-flood sh -c 'seq 1 {flood} | sed s/^/flood-line-/'"
    )
    ssh(DEVICE, f"sh -c {shlex.quote(script)}")
    unit = ssh(
        DEVICE, f"journalctl --since=@{since} -t rvm-detector-flood -o json -n 1 --no-pager"
    ).stdout
    assert json.loads(unit)["_SYSTEMD_UNIT"] == "rvm-detector.service", unit
    stored = int(
        ssh(DEVICE, f"journalctl --since=@{since} -t rvm-detector-flood -o cat | wc -l").stdout
    )
    # journald reports the dropped lines once the interval (30s) has passed and the unit
    # logs again (the detector does, every few seconds).
    deadline = time.monotonic() + 90
    suppressed = ""
    while time.monotonic() < deadline and not suppressed:
        suppressed = ssh(
            DEVICE,
            f"journalctl --since=@{since} -u systemd-journald -o cat --no-pager"
            " -g 'Suppressed [0-9]+ messages from rvm-detector.service'",
            check=False,
        ).stdout.strip()
        time.sleep(3)
    print(f"rate limit: {stored} of {flood} lines stored; journald: {suppressed}")
    assert stored < flood, f"all {flood} lines were stored: no rate limit on rvm-detector.service"
    assert suppressed, "journald never reported suppressed messages from rvm-detector.service"
    assert int(re.search(r"Suppressed (\d+)", suppressed).group(1)) > 0
    assert ready(DEVICE), f"{DEVICE}: the detector is not ready after the flood"
    assert ssh(DEVICE, "systemctl show -P NRestarts rvm-detector").stdout.strip() == restarts


def test_marker_lines_logged_during_a_log_host_outage_all_arrive_once() -> None:
    """journal-remote stopped while a device logs markers; started again: all arrive, once."""
    run = secrets.token_hex(4)
    tag = f"rvm-log-marker-{run}"
    markers = [f"marker {run} {i:03d}" for i in range(1, 201)]
    uploads_before = int(ssh(DEVICE, "systemctl show -P NRestarts systemd-journal-upload").stdout)
    # The whole log service: TLS front (stunnel), journal-remote and its socket.
    ssh(LOG_HOST, f"systemctl stop {' '.join(LOG_SERVICE)}")
    try:
        lines = "\n".join(markers)
        ssh(
            DEVICE,
            f"printf '%s\\n' {shlex.quote(lines)}"
            f' | while read -r l; do echo "$l"; sleep 0.05; done | systemd-cat -t {tag}',
        )
        # The upload has met the outage (and keeps retrying) before the log host returns.
        deadline = time.monotonic() + 60
        while (
            int(ssh(DEVICE, "systemctl show -P NRestarts systemd-journal-upload").stdout)
            <= uploads_before
        ):
            assert time.monotonic() < deadline, "journal-upload never noticed the log host was down"
            time.sleep(2)
        assert central_lines(tag) == [], "markers reached the log host while it was down"
    finally:
        ssh(LOG_HOST, f"systemctl start {' '.join(LOG_SERVICE)}")
    start = time.monotonic()
    deadline = start + 120
    while (got := central_lines(tag)) != markers and time.monotonic() < deadline:
        if len(got) > len(markers):
            break
        time.sleep(1)
    resume_s = time.monotonic() - start
    record_timing(f"log host back to all {len(markers)} outage markers central", resume_s)
    print(f"outage: {len(got)} of {len(markers)} markers central {resume_s:.1f}s after the restart")
    missing = sorted(set(markers) - set(got))
    doubled = sorted({m for m in got if got.count(m) > 1})
    assert not missing, f"{len(missing)} markers lost centrally, first {missing[:3]}"
    assert not doubled, f"markers arrived twice: {doubled[:3]}"
    assert got == markers, "markers arrived out of order"


def _post_upload(client_cert: str) -> str:
    """POST an empty upload to journal-remote from the device; what came back."""
    code = f"""
import http.client, ssl
ctx = ssl.create_default_context(cafile="/etc/ssl/journal-upload/ca.pem")
cert = {client_cert!r}
if cert:
    ctx.load_cert_chain(cert + ".pem", cert + ".key")
host = {HOSTS.hostvars[LOG_HOST]["ansible_host"]!r}
c = http.client.HTTPSConnection(host, 19532, context=ctx, timeout=10)
try:
    headers = {{"Content-Type": "application/vnd.fdo.journal"}}
    c.request("POST", "/upload", body=b"", headers=headers)
    print(c.getresponse().status)
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__, e)
"""
    return HOSTS.py(DEVICE, code).strip()


def test_the_upload_is_tls_verified_both_ways() -> None:
    """Only a client certificate signed by the CA gets in; the server is checked by the CA."""
    ssh(
        DEVICE,
        "cd /tmp && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
        f" -keyout rogue.key -out rogue.pem -subj /CN={DEVICE} -days 1 2>/dev/null",
    )
    ssh(
        DEVICE,
        "install -m 0600 /etc/ssl/journal-upload/client.key /tmp/fleet.key && "
        "cp /etc/ssl/journal-upload/client.pem /tmp/fleet.pem",
    )
    try:
        signed = _post_upload("/tmp/fleet")
        without = _post_upload("")
        rogue = _post_upload("/tmp/rogue")
    finally:
        ssh(DEVICE, "rm -f /tmp/rogue.key /tmp/rogue.pem /tmp/fleet.key /tmp/fleet.pem")
    print(f"TLS: CA-signed client -> {signed}; no certificate -> {without}; self-signed -> {rogue}")
    assert signed.startswith("2"), f"the device's own certificate was refused: {signed}"
    for what, answer in (("no client certificate", without), ("a self-signed certificate", rogue)):
        assert answer.startswith("refused") or answer.startswith("4"), f"{what} got in: {answer}"
    # The device trusts the fleet CA only: a server it cannot verify is refused.
    conf = ssh(DEVICE, "systemd-analyze cat-config systemd/journal-upload.conf").stdout
    assert re.search(r"^URL=https://", conf, re.M), conf
    assert re.search(r"^TrustedCertificateFile=/etc/ssl/journal-upload/ca.pem", conf, re.M), conf


def test_the_central_store_is_vacuumed_to_its_cap() -> None:
    """Archived journals beyond the store's cap are removed by the vacuum timer."""
    unit = ssh(LOG_HOST, "systemctl cat journal-remote-vacuum.service").stdout
    cap = size_bytes(re.search(r"--vacuum-size=(\S+)", unit).group(1))
    # A real journal file, written by journal-remote itself from the log host's own entries.
    sample = "/tmp/rvm-sample.journal"
    ssh(
        LOG_HOST,
        f"rm -f {sample}; journalctl -o export -n 200 |"
        f" /lib/systemd/systemd-journal-remote --output={sample} -",
    )
    size = int(ssh(LOG_HOST, f"stat -c %s {sample}").stdout)
    copies = cap // size + 2
    # Archived-file names (<prefix>@<seqnum id>-<seqnum>-<realtime>.journal), an hour old.
    then_us = int(time.time() * 1e6) - 3600 * 10**6
    names = [
        f"{REMOTE_DIR}/remote-test@{'0' * 31}1-{i:016x}-{then_us + i:016x}.journal"
        for i in range(1, copies + 1)
    ]
    ssh(
        LOG_HOST,
        f"for n in {' '.join(names)}; do install -m 0640 -o systemd-journal-remote"
        f" -g systemd-journal-remote {sample} $n; done; rm {sample}",
        timeout=120,
    )
    start = time.monotonic()
    deadline = start + 150

    def archived_bytes() -> int:
        out = ssh(LOG_HOST, f"find {REMOTE_DIR} -name '*@*.journal' -printf '%s\\n'").stdout
        return sum(int(n) for n in out.split())

    while (now := archived_bytes()) > cap and time.monotonic() < deadline:
        time.sleep(5)
    took = time.monotonic() - start
    print(
        f"central store: {copies} x {size} bytes archived -> {now} within {took:.0f}s (cap {cap})"
    )
    assert now <= cap, f"{LOG_HOST}: archived journals take {now} bytes, over the cap of {cap}"


def test_the_upload_port_is_open_to_the_devices_only() -> None:
    """19532 on the log host answers a device, not another host of the fleet."""
    address = HOSTS.hostvars[LOG_HOST]["ansible_host"]
    code = (
        "import socket\n"
        "try:\n"
        f" socket.create_connection(({address!r}, 19532), timeout=5).close(); print('open')\n"
        "except OSError as e:\n print('closed', e)"
    )
    assert HOSTS.py(DEVICE, code).strip() == "open"
    for other in HOSTS.groups.get("platform", []):
        answer = HOSTS.py(other, code).strip()
        assert answer.startswith("closed"), f"{other} reaches {LOG_HOST}:19532: {answer}"


def test_a_missing_certificate_stops_the_run_naming_the_variable() -> None:
    """Preflight: a role without its certificate or key fails before it changes anything."""
    for var in ("journal_upload_client_key", "journal_remote_server_cert"):
        run = playbook(LAB_PLAY, INVENTORY_FILE.parent, "--tags", "logs", "-e", f"{var}=")
        assert not run.ok, f"the run went through with {var} empty"
        assert f"{var} is empty or not PEM" in run.text, run.text[-2000:]
