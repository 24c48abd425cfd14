"""Running Ansible and commands against lab hosts: one place for the tests, the Molecule
verifiers and the benchmark scripts.

    sys.path.insert(0, str(REPO / "lab"))
    from labtools import LabHosts, playbook

`playbook()` runs ansible-playbook from the repository with its ansible.cfg, both role
paths (production roles/ and the lab's lab/roles/) and the repository's venv on PATH, and
times it. `LabHosts` reads a lab inventory (as rvmlab.py writes it) and runs commands on
its hosts over SSH exactly as Ansible connects.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LAB_PLAY = REPO / "lab" / "site.yml"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment ansible-playbook runs with, as `make lab` gives it."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": f"{REPO / 'roles'}:{REPO / 'lab' / 'roles'}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        **extra,
    }
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    return env


@dataclass
class Run:
    """One finished ansible-playbook run."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """Everything it printed (failures go to stderr), whitespace folded to one space."""
        return " ".join((self.stdout + self.stderr).split())

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host: {'host': {'ok': 3, 'changed': 0, 'failed': 0, ...}}."""
        recap = self.stdout.rpartition("PLAY RECAP")[2]
        return {
            m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", recap, re.M)
        }


def ansible_output_file(inventory: str | Path) -> Path:
    """Where every ansible-playbook run against a lab keeps its complete output.

    Beside the inventory (a `.txt`, which Ansible's inventory loader skips); Molecule's
    converge, idempotence and check write the same file (ANSIBLE_LOG_PATH in
    .config/molecule/config.yml), so tests can search all the Ansible output of a lab.
    """
    inventory = Path(inventory)
    return (inventory if inventory.is_dir() else inventory.parent) / "ansible-output.txt"


def playbook(
    play: str | Path, inventory: str | Path, *args: str, timeout: float = 1800, **env: str
) -> Run:
    """Run ansible-playbook PLAY -i INVENTORY ARGS... from the repository root."""
    start = time.monotonic()
    env.setdefault("ANSIBLE_LOG_PATH", str(ansible_output_file(inventory)))
    proc = subprocess.run(
        ["ansible-playbook", str(play), "-i", str(inventory), *args],
        cwd=REPO,
        env=ansible_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


class LabHosts:
    """The hosts of a lab inventory file, reachable over SSH as Ansible reaches them."""

    def __init__(self, inventory_file: str | Path) -> None:
        self.inventory_file = Path(inventory_file)
        self.hostvars: dict[str, dict] = {}
        self.groups: dict[str, list[str]] = {}
        inventory = yaml.safe_load(self.inventory_file.read_text())
        # rvmlab.py nests the groups under all.children; Molecule writes them at the top.
        self._walk("all", inventory["all"], {})
        for name, group in inventory.items():
            if name != "all":
                self._walk(name, group or {}, {})

    def _walk(self, name: str, group: dict, inherited: dict) -> None:
        merged = {**inherited, **(group.get("vars") or {})}
        members = self.groups.setdefault(name, [])
        for host, hv in (group.get("hosts") or {}).items():
            self.hostvars[host] = {**self.hostvars.get(host, {}), **merged, **(hv or {})}
            if host not in members:
                members.append(host)
        for child_name, child in (group.get("children") or {}).items():
            self._walk(child_name, child or {}, merged)
            members.extend(h for h in self.groups[child_name] if h not in members)

    def key_file(self, host: str) -> Path:
        """The lab's SSH key; the lab's secrets (its vault stand-in) are beside it."""
        hv = self.hostvars[host]
        return Path(hv.get("ansible_ssh_private_key_file") or hv["ansible_private_key_file"])

    def secrets_dir(self, host: str) -> Path:
        return self.key_file(host).parent / "secrets"

    def monitoring_api(self, host: str, path: str) -> object:
        """GET on a monitoring host's Prometheus (PATH ':9090/...') or Alertmanager (':9093/...'),
        as an operator does from the controller: over the management network, basic auth."""
        password = (self.secrets_dir(host) / "monitoring-web-password").read_text().strip()
        request = urllib.request.Request(f"http://{self.hostvars[host]['ansible_host']}{path}")
        token = base64.b64encode(f"admin:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=20) as answer:
            body = json.load(answer)
        return body.get("data", body) if isinstance(body, dict) else body

    def ssh(self, host: str, command: str, check: bool = True, timeout: float = 120, input=None):
        """Run a shell command on a lab host (INPUT on its stdin); with check, fail naming
        host and command."""
        hv = self.hostvars[host]
        argv = [
            "ssh",
            "-i",
            str(self.key_file(host)),
            *shlex.split(hv.get("ansible_ssh_common_args", "")),
            "-o",
            "BatchMode=yes",
            f"{hv.get('ansible_user', 'root')}@{hv['ansible_host']}",
            command,
        ]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {command!r} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def py(self, host: str, code: str) -> str:
        """Run Python code on a lab host and return what it printed."""
        return self.ssh(host, f"python3 -c {shlex.quote(code)}").stdout

    def ready(self, host: str) -> bool:
        """The detector on a device answers /readyz with 200."""
        code = (
            "import urllib.request as u\n"
            "try:\n print(u.urlopen('http://127.0.0.1:8080/readyz', timeout=5).status)\n"
            "except Exception as e:\n print(getattr(e, 'code', 0))"
        )
        return self.py(host, code).strip() == "200"

    def deposit(self, host: str) -> str:
        """One deposit over a device's local API (as the machine makes it); its uuid."""
        code = (
            "import json, urllib.request as u\n"
            "r = u.Request('http://127.0.0.1:8080/deposit', data=b'{}', method='POST',"
            " headers={'Content-Type': 'application/json'})\n"
            "print(json.load(u.urlopen(r, timeout=60))['uuid'])"
        )
        return self.py(host, code).strip()

    def platform_admin(self, path: str, body: dict | None = None) -> object:
        """GET (or POST BODY to) the platform stand-in's admin API, on its host's loopback."""
        url = f"http://127.0.0.1:8001{path}"
        if body is None:
            code = f"import urllib.request as u; print(u.urlopen({url!r}).read().decode())"
        else:
            code = (
                "import urllib.request as u\n"
                f"r = u.Request({url!r}, data={json.dumps(body).encode()!r},"
                " method='POST', headers={'Content-Type': 'application/json'})\n"
                "print(u.urlopen(r).read().decode())"
            )
        return json.loads(self.py(self.groups["platform"][0], code))

    def stored_counts(self, uuids: list[str]) -> dict[str, int]:
        """How many times the platform stored each deposit (by its idempotency key)."""
        counts = dict.fromkeys(uuids, 0)
        for d in self.platform_admin("/admin/deposits"):  # type: ignore[union-attr]
            if d["idem_key"] in counts:
                counts[d["idem_key"]] += 1
        return counts

    def assert_delivered_once(self, uuids: list[str], timeout_s: float = 120) -> None:
        """Every deposit is stored by the platform exactly once (none lost, none doubled)."""
        deadline = time.monotonic() + timeout_s
        while True:
            counts = self.stored_counts(uuids)
            if all(c == 1 for c in counts.values()) or time.monotonic() > deadline:
                break
            time.sleep(2)
        missing = [u for u, c in counts.items() if c == 0]
        doubled = [u for u, c in counts.items() if c > 1]
        assert not missing and not doubled, f"missing={missing} doubled={doubled}"
        assert self.platform_admin("/admin/stats")["duplicate_deposits"] == 0  # type: ignore[index]
