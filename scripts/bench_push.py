#!/usr/bin/env python3
"""How a push run's cost grows with the fleet, against pull mode: for each device count, a
fresh lab (N devices, the platform stand-in with the git server, a monitoring host and a
backup host), one converge, then the two runs an operator repeats - an idempotent run of the
whole site.yml, and a release switch (`--tags detector`, canary then batches) - each timed,
with the controller's CPU (ansible-playbook and its SSH). Then the first device, also in pull
mode, converges itself from a signed commit (idempotent, then a release switch): its wall
time, its own CPU and the git server's. Prints Markdown tables.

  sudo .venv/bin/python scripts/bench_push.py --devices 1 3 6
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, LabHosts, ansible_env  # noqa: E402

RVMLAB = [sys.executable, str(REPO / "lab" / "rvmlab.py")]
LAB = "benchpush"


CPU: list[float] = []  # the controller's CPU seconds (ansible-playbook and its ssh), per run


def timed(cmd: list[str], **kw) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, **kw)
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU.append(cpu)
    print(f"bench_push: {elapsed:7.1f}s wall {cpu:7.1f}s controller CPU  {' '.join(cmd[:6])}",
          file=sys.stderr, flush=True)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def bench(devices: int) -> dict[str, float]:
    env = ansible_env(NO_COLOR="1")
    inventory_dir = Path(tempfile.mkdtemp(prefix="rvmlab-benchpush-"))
    (inventory_dir / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    inventory = inventory_dir / "hosts.yml"
    # dev-01 also in pull mode: after the push runs it converges itself, measured on its side.
    hosts = [f"dev-{i:02d}" + (":jetson,pull" if i == 1 else "") for i in range(1, devices + 1)]
    hosts += ["bench-platform:platform", "bench-monitor:monitoring", "bench-backup:backup"]
    up = [*RVMLAB, "up", "--lab", LAB, *(a for h in hosts for a in ("--host", h))]
    playbook = ["ansible-playbook", str(LAB_PLAY), "-i", str(inventory)]
    subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    try:
        timed([*up, "--inventory", str(inventory)])
        converge, _ = timed(playbook, env=env)
        idempotent, out = timed(playbook, env=env)
        changed = [line for line in out.splitlines() if "changed=" in line]
        if any("changed=0" not in line for line in changed):
            sys.exit(f"the idempotent run changed something:\n{chr(10).join(changed)}")
        switch, _ = timed(
            [*playbook, "--tags", "detector", "-e", f"release_id=bench-{devices}"], env=env
        )
        cpu = CPU[-3:]  # before the pull part adds its own commands
        pull = bench_pull(inventory)
    finally:
        subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    return {"converge": converge, "idempotent": idempotent, "release switch": switch,
            "converge cpu": cpu[0], "idempotent cpu": cpu[1], "release switch cpu": cpu[2],
            **pull}  # fmt: skip


def bench_pull(inventory: Path) -> dict[str, float]:
    """dev-01 in pull mode: one run that changes nothing, one release switch; the wall time
    and CPU of each on the device (the unit's accounting) and on the git server."""
    hosts = LabHosts(inventory)
    device, server = hosts.groups["pull"][0], hosts.groups["platform"][0]

    def cpu_s(host: str, unit: str) -> float:
        return int(hosts.ssh(host, f"systemctl show -p CPUUsageNSec --value {unit}").stdout) / 1e9

    out: dict[str, float] = {}
    host_vars = inventory.parent / "bench-host-vars.yml"
    for what, extra in (("pull idempotent", []), ("pull release switch", ["--host-vars",
                        f"{device}={host_vars}"])):  # fmt: skip
        host_vars.write_text("detector_app_config_extra: {camera: {fps: 4}, model: {threads: 1}}\n")
        timed([sys.executable, str(REPO / "lab" / "git_publish.py"), "publish",
               "--lab-dir", str(hosts.key_file(device).parent), "--inventory", str(inventory),
               "--pull-host", device, "--server", hosts.hostvars[server]["ansible_host"],
               "--ssh-key", str(hosts.key_file(device)), "--ring", "canary", *extra])  # fmt: skip
        git_before = cpu_s(server, "lab-git-daemon.service")
        start = time.monotonic()
        hosts.ssh(device, "systemctl start rvm-pull.service", timeout=1800)
        out[what] = time.monotonic() - start
        state = json.loads(hosts.ssh(device, "cat /var/lib/rvm-pull/state.json").stdout)
        if state["last"]["result"] != "applied":
            sys.exit(f"the {what} run did not apply: {state['last']}")
        out[f"{what} device cpu"] = cpu_s(device, "rvm-pull.service")  # this run's: oneshot
        out[f"{what} git server cpu"] = cpu_s(server, "lab-git-daemon.service") - git_before
        print(f"bench_push: {out[what]:7.1f}s wall {out[f'{what} device cpu']:7.1f}s device CPU "
              f"{out[f'{what} git server cpu']:5.2f}s git server CPU  {what} "
              f"({state['last']['message']})", file=sys.stderr, flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 3, 6])
    args = parser.parse_args()
    results = {n: bench(n) for n in args.devices}
    print("| devices | first converge (s) | idempotent run (s, controller CPU s) "
          "| release switch (s, controller CPU s) |")  # fmt: skip
    print("|---:|---:|---:|---:|")
    for n, r in results.items():
        print(f"| {n} | {r['converge']:.0f} | {r['idempotent']:.0f} ({r['idempotent cpu']:.0f}) "
              f"| {r['release switch']:.0f} ({r['release switch cpu']:.0f}) |")  # fmt: skip
    print("\n| pull mode, on dev-01 | wall (s) | device CPU (s) | git server CPU (s) |")
    print("|---|---:|---:|---:|")
    for n, r in results.items():
        for what in ("pull idempotent", "pull release switch"):
            print(
                f"| {what} ({n} devices in the lab) | {r[what]:.0f} | "
                f"{r[what + ' device cpu']:.0f} | {r[what + ' git server cpu']:.2f} |"
            )
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
