#!/usr/bin/env python3
"""The lab: real systemd hosts on one machine, for `make lab` and Molecule.

Each host is a copy of a cached Debian bookworm root (debootstrap), booted with
`systemd-nspawn --boot` inside its own network namespace. A lab is a set of hosts
on one Linux bridge with NAT to the outside (for apt), so hosts reach each other and
the controller reaches them over SSH exactly as it reaches a Jetson.

Everything a lab creates is recorded in its state file *before* it is created, so
`down` can remove it all after any failure, and labs are numbered so that several
(say `make lab` and a Molecule run) live side by side without clashing.

Stdlib only: it runs as root before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

STATE_DIR = Path(os.environ.get("RVMLAB_STATE_DIR", "/var/lib/rvm-lab"))
CACHE_DIR = Path(os.environ.get("RVMLAB_CACHE_DIR", "/var/cache/rvm-lab"))
MIRROR = os.environ.get("RVMLAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# What a flashed Jetson has out of the box, roughly: systemd, sshd and Python for Ansible.
# Changing this list (or RECIPE_VERSION) changes the cache key and rebuilds the root.
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "python3-venv",
    "sudo",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "gnupg",
]
RECIPE_VERSION = "1"
SUBNET = "10.213.{index}.0/24"
BOOT_TIMEOUT_S = 120
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "iptables": "iptables",
    "nsenter": "util-linux",
    "ssh-keygen": "openssh-client",
}


class LabError(Exception):
    """A problem the user can act on; printed without a traceback."""


def log(msg: str) -> None:
    print(f"rvmlab: {msg}", file=sys.stderr, flush=True)


def run(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# --- preflight ---------------------------------------------------------------


def preflight() -> None:
    """Refuse to start, changing nothing, when we cannot finish."""
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, nspawn, iptables): run it with sudo"
        )
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool)})
    if missing:
        raise LabError(
            f"missing packages: {' '.join(missing)}. Install them with "
            f"`apt-get install {' '.join(missing)}` (or run `make setup`)"
        )


# --- the cached root ---------------------------------------------------------


def recipe_key() -> str:
    recipe = json.dumps([RECIPE_VERSION, SUITE, MIRROR, PACKAGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def root_path() -> Path:
    return CACHE_DIR / "roots" / f"{SUITE}-{recipe_key()}"


def build_root(force: bool = False) -> Path:
    """Build the base root once per recipe; later calls return the cache."""
    root = root_path()
    root.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time; a lab being created meanwhile waits for the finished root.
    with open(root.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and not force:
            return root
        return _debootstrap(root, force)


def _debootstrap(root: Path, force: bool) -> Path:
    work = root.with_name(root.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    log(f"building the base root {root.name} with debootstrap (once per recipe, ~1-2 min)")
    start = time.monotonic()
    proc = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(work),
            MIRROR,
        ],
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        tail = "\n".join(proc.stdout.splitlines()[-15:])
        raise LabError(f"debootstrap failed ({proc.returncode}):\n{tail}\n{proc.stderr}")
    # Host keys and machine-id are per host; never ship one shared by every copy.
    for key in (work / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (work / "etc/machine-id").write_text("")
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    (work / "var/cache/apt/archives/partial").mkdir(parents=True)
    if force:
        shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    log(f"base root ready in {time.monotonic() - start:.0f}s: {root}")
    return root


# --- state -------------------------------------------------------------------


@contextlib.contextmanager
def locked():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def lab_dir(lab: str) -> Path:
    return STATE_DIR / "labs" / lab


def load_state(lab: str) -> dict | None:
    path = lab_dir(lab) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def save_state(state: dict) -> None:
    path = lab_dir(state["lab"]) / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)


def all_states() -> list[dict]:
    labs = STATE_DIR / "labs"
    if not labs.is_dir():
        return []
    return [s for d in sorted(labs.iterdir()) if (s := load_state(d.name))]


def free_index() -> int:
    used = {s["index"] for s in all_states()}
    for index in range(1, 255):
        if index not in used and not Path(f"/sys/class/net/rvmbr{index}").exists():
            return index
    raise LabError("no free lab number (1-254 are all in use): run `rvmlab.py list` and `down`")


# --- up ----------------------------------------------------------------------


def parse_host(spec: str) -> tuple[str, list[str]]:
    name, _, groups = spec.partition(":")
    if not NAME_RE.match(name):
        raise LabError(f"host name {name!r} is not valid: use lower-case letters, digits and -")
    return name, [g for g in groups.split(",") if g] or ["jetson"]


def up(lab: str, host_specs: list[str], inventory: Path | None, instance_config: Path | None):
    preflight()
    if not NAME_RE.match(lab):
        raise LabError(f"lab name {lab!r} is not valid: use lower-case letters, digits and -")
    hosts = [parse_host(spec) for spec in host_specs]
    if len({h for h, _ in hosts}) != len(hosts):
        raise LabError("host names must be unique within a lab")
    root = build_root()
    with locked():
        if load_state(lab):
            raise LabError(f"lab {lab!r} exists already: `rvmlab.py down --lab {lab}` first")
        index = free_index()
        lab_dir(lab).mkdir(parents=True)
        state = {"lab": lab, "index": index, "bridge": f"rvmbr{index}", "hosts": [], "nat": []}
        save_state(state)
    try:
        create_network(state)
        key = lab_dir(lab) / "id_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rvmlab-{lab}", "-f", str(key))
        for n, (name, groups) in enumerate(hosts, start=1):
            create_host(state, root, n, name, groups, key)
        for host in state["hosts"]:
            wait_ready(state, host)
    except BaseException:
        log("creating the lab failed; removing what was made")
        down(lab)
        raise
    write_known_hosts(state)
    if inventory:
        write_inventory(state, inventory)
    if instance_config:
        write_instance_config(state, instance_config)
    return state


def create_network(state: dict) -> None:
    bridge, index = state["bridge"], state["index"]
    subnet = SUBNET.format(index=index)
    run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "addr", "add", f"10.213.{index}.1/24", "dev", bridge)
    run("ip", "link", "set", bridge, "up")
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    saved = STATE_DIR / "ip_forward.before"
    if not saved.exists():
        saved.write_text(forward.read_text())
    forward.write_text("1\n")
    comment = f"rvmlab:{state['lab']}"
    rules = [
        ["nat", "POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"],
        ["filter", "FORWARD", "-i", bridge, "-j", "ACCEPT"],
        ["filter", "FORWARD", "-o", bridge, "-j", "ACCEPT"],
    ]
    for table, chain, *spec in rules:
        rule = [table, chain, *spec, "-m", "comment", "--comment", comment]
        state["nat"].append(rule)
        save_state(state)
        run(
            "iptables", "-w", "-t", table, "-A", chain, *spec, "-m", "comment", "--comment", comment
        )


def create_host(state: dict, root: Path, n: int, name: str, groups: list[str], key: Path):
    index = state["index"]
    host = {
        "name": name,
        "groups": groups,
        "machine": f"rvmlab-{state['lab']}-{name}",
        "netns": f"rvmlab-{state['lab']}-{name}",
        "veth": f"rvm{index}h{n}",
        "address": f"10.213.{index}.{10 + n}",
        "dir": str(lab_dir(state["lab"]) / "hosts" / name),
        "pid": None,
    }
    state["hosts"].append(host)
    save_state(state)
    log(f"{name}: copying the base root")
    hostdir = Path(host["dir"])
    hostdir.parent.mkdir(parents=True, exist_ok=True)
    run("cp", "-a", "--reflink=auto", str(root), str(hostdir))
    (hostdir / "etc/hostname").write_text(f"{name}\n")
    (hostdir / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    (hostdir / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    ssh_dir = hostdir / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    run(
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        name,
        "-f",
        str(hostdir / "etc/ssh/ssh_host_ed25519_key"),
    )

    run("ip", "netns", "add", host["netns"])
    run(
        "ip",
        "link",
        "add",
        host["veth"],
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        host["netns"],
    )
    run("ip", "link", "set", host["veth"], "master", state["bridge"], "up")
    ns = ["ip", "-n", host["netns"]]
    run(*ns, "link", "set", "lo", "up")
    run(*ns, "addr", "add", f"{host['address']}/24", "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")
    run(*ns, "route", "add", "default", "via", f"10.213.{index}.1")

    cgroups = host_cgroups(state["lab"], name)
    for cgroup in cgroups:
        try:
            cgroup.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LabError(f"{name}: cannot create its cgroup {cgroup}: {e.strerror}") from e

    def enter_own_cgroups() -> None:  # in the child, before nspawn starts
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text("0")

    console = open(lab_dir(state["lab"]) / f"{name}.console.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            "systemd-nspawn",
            "--boot",
            # No systemd on the controller to register with; run in our own process.
            "--keep-unit",
            "--register=no",
            f"--directory={hostdir}",
            f"--machine={host['machine']}",
            f"--hostname={name}",
            f"--network-namespace-path=/run/netns/{host['netns']}",
            # The host's firewall (roles/base, nftables) is loaded into its own network
            # namespace; nspawn grants CAP_NET_ADMIN only with a namespace it creates itself.
            "--capability=CAP_NET_ADMIN",
            "--resolv-conf=copy-host",
            "--link-journal=no",
            "--console=passive",
            # Reading the clock's discipline (adjtimex with no changes) is how node exporter
            # and chronyc see whether time is synchronised; without CAP_SYS_TIME a host still
            # cannot set the clock.
            "--system-call-filter=adjtimex clock_adjtime",
        ],
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=enter_own_cgroups,
        # The host owns its network namespace, so its network parameters (/proc/sys/net) are
        # its own to set, as a Jetson's are (roles/base sysctl.yml); the kernel's stay the
        # controller's, read-only.
        env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
    )
    host["pid"] = proc.pid
    save_state(state)
    log(f"{name}: booting at {host['address']} (pid {proc.pid})")


def host_cgroups(lab: str, name: str) -> list[Path]:
    """A cgroup of the host's own in each hierarchy that systemd writes to (cgroup2, and the
    name=systemd hierarchy of a hybrid setup). With --keep-unit and no systemd on the
    controller, nspawn runs a container in the cgroup it is started in: hosts started from
    one cgroup would share one system.slice, and one host's systemd removes the cgroup of a
    unit another host is just starting (status=219/CGROUP when the same unit runs on several
    hosts at once, as a handler does)."""
    trees = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mountpoint, (fstype, _source, options) = fields[4], fields[fields.index("-") + 1 :][:3]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            trees.append(Path(mountpoint) / "rvmlab" / lab / name)
    return trees


def remove_host_cgroups(lab: str, name: str) -> None:
    """Remove the host's cgroups once its processes are gone (deepest first)."""
    for cgroup in host_cgroups(lab, name):
        try:
            if cgroup.exists():
                for d in sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True):
                    d.rmdir()
                cgroup.rmdir()
        except OSError as e:
            log(f"{name}: cgroup {cgroup} not removed ({e.strerror}): a process of it still runs")
            continue
        for parent in (cgroup.parent, cgroup.parent.parent):
            with contextlib.suppress(OSError):  # another lab, or another host, still there
                parent.rmdir()


def container_init_pid(host: dict) -> int | None:
    pid = host.get("pid")
    if not pid or not is_our_nspawn(host):
        return None
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        first = children.read_text().split()
        return int(first[0]) if first else None
    return None


def is_our_nspawn(host: dict) -> bool:
    """True when the recorded pid is still our nspawn (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{host['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline)
        and cmdline[0].endswith(b"systemd-nspawn")
        and f"--machine={host['machine']}".encode() in cmdline
    )


def in_host(host: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    pid = container_init_pid(host)
    if pid is None:
        raise LabError(f"host {host['name']} is not running (see its console log)")
    return run("nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *args, check=check)


def wait_ready(state: dict, host: dict) -> None:
    """Booted means systemd finished start-up and sshd answers on the network."""
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if not is_our_nspawn(host):
            console = lab_dir(state["lab"]) / f"{host['name']}.console.log"
            raise LabError(f"{host['name']} exited while booting; console:\n{console.read_text()}")
        if container_init_pid(host):
            status = in_host(host, "systemctl", "is-system-running", check=False).stdout.strip()
            if status in ("running", "degraded") and port_open(host["address"], 22):
                if status == "degraded":
                    failed = in_host(host, "systemctl", "--failed", "--no-legend", check=False)
                    log(f"{host['name']}: degraded: {failed.stdout.strip()}")
                return
        time.sleep(0.5)
    raise LabError(f"{host['name']} did not finish booting in {BOOT_TIMEOUT_S}s")


def port_open(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


def write_known_hosts(state: dict) -> None:
    lines = []
    for host in state["hosts"]:
        pub = Path(host["dir"], "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"{host['address']} {pub[0]} {pub[1]}")
    (lab_dir(state["lab"]) / "known_hosts").write_text("\n".join(lines) + "\n")


def write_inventory(state: dict, path: Path) -> None:
    """An Ansible inventory (YAML is a superset of JSON) that playbooks use unchanged."""
    folder = lab_dir(state["lab"])
    groups: dict[str, dict] = {}
    for host in state["hosts"]:
        for group in host["groups"]:
            groups.setdefault(group, {"hosts": {}})["hosts"][host["name"]] = {
                "ansible_host": host["address"]
            }
    inventory = {
        "all": {
            "children": groups,
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(folder / "id_ed25519"),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={folder / 'known_hosts'} -o StrictHostKeyChecking=yes"
                ),
            },
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated by lab/rvmlab.py for lab {state['lab']!r}; do not edit.\n"
    path.write_text(header + json.dumps(inventory, indent=2) + "\n")


def write_instance_config(state: dict, path: Path) -> None:
    """Molecule's default driver reads instances from this file."""
    key = str(lab_dir(state["lab"]) / "id_ed25519")
    instances = [
        {
            "instance": h["name"],
            "address": h["address"],
            "user": "root",
            "port": "22",
            "identity_file": key,
        }
        for h in state["hosts"]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instances, indent=2) + "\n")


# --- down --------------------------------------------------------------------


def down(lab: str) -> bool:
    """Remove everything the lab made; safe to run on a half-made or gone lab."""
    preflight()
    with locked():
        state = load_state(lab)
        if state is None:
            return False
        for host in state["hosts"]:
            stop_host(host)
            remove_host_cgroups(lab, host["name"])
            if Path(f"/run/netns/{host['netns']}").exists():
                run("ip", "netns", "del", host["netns"], check=False)
            if Path(f"/sys/class/net/{host['veth']}").exists():
                run("ip", "link", "del", host["veth"], check=False)
        for table, chain, *spec in state["nat"]:
            while (
                run("iptables", "-w", "-t", table, "-C", chain, *spec, check=False).returncode == 0
            ):
                run("iptables", "-w", "-t", table, "-D", chain, *spec)
        if Path(f"/sys/class/net/{state['bridge']}").exists():
            run("ip", "link", "del", state["bridge"])
        shutil.rmtree(lab_dir(lab))
        saved = STATE_DIR / "ip_forward.before"
        if not all_states() and saved.exists():
            Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
            saved.unlink()
    log(f"lab {lab!r} removed")
    return True


def stop_host(host: dict) -> None:
    if not is_our_nspawn(host):
        return
    pid = host["pid"]
    # SIGTERM asks nspawn to shut the container down cleanly; SIGKILL if it hangs.
    os.kill(pid, signal.SIGTERM)
    for _ in range(60):
        if not is_our_nspawn(host):
            return
        time.sleep(0.5)
    log(f"{host['name']}: no clean shutdown in 30s, killing it")
    os.kill(pid, signal.SIGKILL)
    for _ in range(20):
        if not is_our_nspawn(host):
            return
        time.sleep(0.5)


# --- CLI ---------------------------------------------------------------------


# What the lab's hosts serve to the controller, by group (the roles open these ports to the
# management network, which in the lab is the controller's bridge address).
SERVICES = {
    "monitoring": [
        ("Prometheus", "http://{address}:9090"),
        ("Alertmanager", "http://{address}:9093"),
    ],
}


def service_urls(state: dict) -> list[tuple[str, str, str]]:
    """(host, service, URL) of every service a lab host serves to the controller."""
    return [
        (host["name"], service, url.format(address=host["address"]))
        for host in state["hosts"]
        for group in host["groups"]
        for service, url in SERVICES.get(group, [])
    ]


def find_host(lab: str, name: str) -> dict:
    state = load_state(lab)
    if state is None:
        raise LabError(f"no lab named {lab!r} (see `rvmlab.py list`)")
    for host in state["hosts"]:
        if host["name"] == name:
            return host
    raise LabError(f"lab {lab!r} has no host {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rvmlab.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build-root", help="build (or rebuild) the cached base root")
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("up", help="create a lab and boot its hosts")
    p.add_argument("--lab", required=True)
    p.add_argument("--host", action="append", required=True, metavar="NAME[:GROUP,...]")
    p.add_argument("--inventory", type=Path, help="write an Ansible inventory here")
    p.add_argument("--instance-config", type=Path, help="write Molecule's instance config here")
    p = sub.add_parser("down", help="remove a lab and everything it made")
    p.add_argument("--lab", required=True)
    sub.add_parser("list", help="list the labs on this machine")
    p = sub.add_parser("urls", help="the web services the lab's hosts serve to the controller")
    p.add_argument("--lab", required=True)
    p = sub.add_parser("journal", help="print the journal of a lab host")
    p.add_argument("--lab", required=True)
    p.add_argument("--host", action="append", help="default: every host")
    p.add_argument("--lines", default="200")
    p = sub.add_parser(
        "cable",
        help="unplug or plug a host's network cable (its link to the lab's bridge): to the "
        "rest of the lab the host is gone, while it keeps running",
    )
    p.add_argument("--lab", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("state", choices=["unplug", "plug"])
    p = sub.add_parser("shell", help="run a command on a lab host (default: a shell)")
    p.add_argument("--lab", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("command", nargs="*")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "build-root":
            preflight()
            print(build_root(force=args.force))
        elif args.cmd == "up":
            state = up(args.lab, args.host, args.inventory, args.instance_config)
            for h in state["hosts"]:
                print(f"{h['name']}\t{h['address']}\t{','.join(h['groups'])}")
        elif args.cmd == "down":
            if not down(args.lab):
                log(f"no lab named {args.lab!r}: nothing to remove")
        elif args.cmd == "list":
            for s in all_states():
                hosts = ", ".join(f"{h['name']}={h['address']}" for h in s["hosts"])
                print(f"{s['lab']}\tbridge {s['bridge']}\t{hosts}")
        elif args.cmd == "urls":
            state = load_state(args.lab)
            if state is None:
                raise LabError(f"no lab named {args.lab!r} (see `rvmlab.py list`)")
            secrets = lab_dir(args.lab) / "secrets"
            for host, service, url in service_urls(state):
                print(
                    f"{service:<13} {url}  ({host}; user admin, password in "
                    f"{secrets / 'monitoring-web-password'})"
                )
        elif args.cmd == "journal":
            state = load_state(args.lab) or {"hosts": []}
            for host in state["hosts"]:
                if args.host and host["name"] not in args.host:
                    continue
                print(f"===== journal of {host['name']} (lab {args.lab}) =====", flush=True)
                if container_init_pid(host) is None:
                    print("(host is not running)")
                    continue
                out = in_host(host, "journalctl", "--no-pager", "-n", args.lines, check=False)
                print(out.stdout + out.stderr, flush=True)
        elif args.cmd == "cable":
            host = find_host(args.lab, args.host)
            run("ip", "link", "set", host["veth"], "down" if args.state == "unplug" else "up")
            log(f"{args.host}: cable {args.state}ged ({host['veth']})")
        elif args.cmd == "shell":
            pid = container_init_pid(find_host(args.lab, args.host))
            if pid is None:
                raise LabError(f"host {args.host} is not running")
            cmd = args.command or ["/bin/bash", "-l"]
            os.execvp("nsenter", ["nsenter", "-t", str(pid), "-a", "--", *cmd])
    except LabError as err:
        log(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
