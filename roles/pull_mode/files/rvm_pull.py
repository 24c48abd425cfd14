#!/usr/bin/python3
"""One pull run of an RVM device (roles/pull_mode): its ring's signed commit, applied by
ansible-pull to the device itself.

1. Lock (one run at a time; a second one says so and leaves).
2. Fetch the ring's ref (`ring/<name>`) from the repository into a bare mirror on the device.
3. Decide: the commit this device already applied -> nothing to do (a timer run), unless
   forced (the platform's GIT_PULL); the commit whose run failed -> held, never retried in a
   loop (the ring must move, or --retry-failed).
4. `git verify-commit` against the device's keyring: an unsigned commit, or one signed by a
   key the device does not hold, is refused and never checked out.
5. `ansible-pull` from the mirror at exactly that commit (`--verify-commit` again, by the
   git module), running the repository's site.yml on this host. The detector role's health
   gate and automatic switch-back run inside it, as in a push rollout: a release that never
   becomes ready fails the run, and the device stays on (or returns to) what it had.

Every run ends with the state file (read by the detector for its heartbeat) and the node
exporter's textfile, both written atomically. Exit status 0 when the device runs its ring's
commit (applied now or before), 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

METRICS_FILE = "rvm_pull.prom"
RESULTS = ("applied", "unchanged", "held", "refused", "failed", "unreachable", "no_ref", "busy")
OK_RESULTS = ("applied", "unchanged")


class Outcome(Exception):
    """How a run ended: RESULTS names it, the message says why (logged and reported)."""

    def __init__(self, result: str, reason: str, commit: str = "") -> None:
        super().__init__(reason)
        self.result, self.reason, self.commit = result, reason, commit


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(mode)
    tmp.replace(path)


def git_env(args: argparse.Namespace) -> dict[str, str]:
    """Credentials reach git through its environment, never its command line (ps shows that)."""
    env = {**os.environ, "GNUPGHOME": args.gnupg_home, "GIT_TERMINAL_PROMPT": "0"}
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
        basic = base64.b64encode(f"{args.token_user}:{token}".encode()).decode()
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }
    if args.ssh_key:
        env["GIT_SSH_COMMAND"] = (
            f"ssh -i {args.ssh_key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={args.known_hosts}"
        )
    if args.ca_file:
        env["GIT_SSL_CAINFO"] = args.ca_file
    return env


def git(mirror: Path, env: dict[str, str], *argv: str, timeout: float = 300):
    return subprocess.run(
        ["git", "-C", str(mirror), *argv], env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def last_line(text: str) -> str:
    """git's reason: its first fatal: or error: line (advice follows it), else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (reasons or lines[-1:] or [""])[0]


def fetch(args: argparse.Namespace, env: dict[str, str]) -> str:
    """The ring's commit, fetched into the mirror; Outcome when the server or ref is missing."""
    mirror = Path(args.mirror)
    if not (mirror / "HEAD").exists():
        mirror.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", str(mirror)], check=True)
    ref = f"refs/heads/{args.ref}"
    try:
        proc = git(
            mirror, env, "fetch", "--quiet", "--no-tags", "--force", args.repo,
            f"+{ref}:{ref}", timeout=args.fetch_timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise Outcome(
            "unreachable", f"fetching {args.ref} from {args.repo} took over {args.fetch_timeout}s"
        ) from None
    if proc.returncode != 0:
        err = proc.stderr
        if "couldn't find remote ref" in err or "could not find remote ref" in err.lower():
            raise Outcome(
                "no_ref",
                f"{args.repo} has no branch {args.ref}: check pull_mode_ring, or create the "
                f"ring's branch (git push origin <commit>:{args.ref})",
            )
        raise Outcome("unreachable", f"cannot fetch {args.ref} from {args.repo}: {last_line(err)}")
    return git(mirror, env, "rev-parse", "--verify", f"{ref}^{{commit}}").stdout.strip()


def verify(args: argparse.Namespace, env: dict[str, str], commit: str) -> str:
    """The signer's key (gpg's fingerprint), or Outcome refused."""
    proc = git(Path(args.mirror), env, "verify-commit", "--raw", commit)
    status = proc.stderr
    signer = next(
        (line.split()[2] for line in status.splitlines() if line.startswith("[GNUPG:] VALIDSIG")),
        "",
    )
    if proc.returncode == 0 and signer:
        return signer
    if "[GNUPG:] NO_PUBKEY" in status or "[GNUPG:] ERRSIG" in status:
        why = "signed by a key that is not in this device's keyring"
    elif "[GNUPG:] BADSIG" in status:
        why = "its signature does not match its content"
    elif "[GNUPG:]" not in status:
        why = "it is not signed"
    else:
        why = f"its signature did not verify ({last_line(status)})"
    raise Outcome(
        "refused",
        f"commit {commit[:12]} of {args.ref} is refused: {why}; this device keeps running what "
        "it has (sign commits with a key in pull_mode_signing_keys)",
        commit,
    )


def descendants(pid: int) -> list[int]:
    """Every process below PID, from /proc (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def apply(args: argparse.Namespace, env: dict[str, str], commit: str) -> int:
    """ansible-pull at exactly COMMIT; the number of changes its recap reports for this host.
    Outcome failed when the run (or its health gate) fails."""
    argv = [
        args.ansible_pull, "--url", f"file://{Path(args.mirror).resolve()}", "--checkout", commit,
        "--directory", args.checkout, "--full", "--clean", "--verify-commit",
        "--inventory", args.inventory, "--limit", args.host,
        *(["--extra-vars", f"@{args.vars_file}"] if args.vars_file else []),
        *args.extra, args.playbook,
    ]  # fmt: skip
    log(f"applying {args.ref} at {commit[:12]}: {' '.join(argv)}")
    recap = re.compile(rf"^{re.escape(args.host)}\s*:\s*ok=\d+\s+changed=(\d+)")
    changes = -1
    # From /, where the relative inventory does not exist: ansible-pull's checkout step then
    # runs on an implicit localhost, and only the playbook reads the inventory (ansible-pull
    # changes into the checkout first), whatever this host is named there.
    with subprocess.Popen(
        argv, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:  # fmt: skip
        timed_out = threading.Event()

        def stop() -> None:
            # ansible-pull starts ansible-playbook in a session of its own: the whole tree.
            timed_out.set()
            for pid in [proc.pid, *descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(args.run_timeout, stop)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # to the journal: the run's whole output stays there
                sys.stderr.write(line)
                if m := recap.match(line):
                    changes = int(m.group(1))
            returncode = proc.wait()
        finally:
            timer.cancel()
    sys.stderr.flush()
    if timed_out.is_set():
        raise Outcome(
            "failed", f"ansible-pull at {commit[:12]} ran over {args.run_timeout}s", commit
        )
    if returncode != 0:
        raise Outcome(
            "failed",
            f"ansible-pull at {commit[:12]} exited {returncode} (the log above says which "
            "task; a release that never became ready was switched back); this commit is not "
            "retried until the ring moves",
            commit,
        )
    head = subprocess.run(
        ["git", "-C", args.checkout, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if head != commit:
        raise Outcome("failed", f"ansible-pull left the checkout at {head[:12] or '(none)'}, not "
                      f"{commit[:12]}", commit)  # fmt: skip
    return changes


def run(args: argparse.Namespace, state: dict) -> tuple[str, str, str]:
    """(result, commit, message) of one run."""
    env = git_env(args)
    commit = fetch(args, env)
    failed = state.get("failed") or {}
    applied = state.get("applied") or {}
    if failed.get("commit") == commit and not args.retry_failed:
        raise Outcome(
            "held",
            f"{args.ref} is still at {commit[:12]}, whose run failed at {failed.get('at_text')}: "
            "not retried (move the ring to a new commit, or run rvm-pull --retry-failed)",
            commit,
        )
    if applied.get("commit") == commit and not args.force:
        return "unchanged", commit, f"{args.ref} is at {commit[:12]}, already applied"
    signer = verify(args, env, commit)
    changes = apply(args, env, commit)
    message = f"{args.ref} at {commit[:12]} (signed by {signer}) applied, {changes} changed"
    return "applied", commit, message


def render_metrics(state: dict, now: float) -> str:
    last = state.get("last") or {}
    applied = state.get("applied") or {}
    counts = state.get("counts") or {}
    lines = [
        "# HELP rvm_pull_runs_total Pull runs by how they ended.",
        "# TYPE rvm_pull_runs_total counter",
        *(f'rvm_pull_runs_total{{result="{r}"}} {counts.get(r, 0)}' for r in RESULTS),
        "# HELP rvm_pull_last_run_ok 1 when the last run left the device on its ring's commit.",
        "# TYPE rvm_pull_last_run_ok gauge",
        f"rvm_pull_last_run_ok {int(last.get('result') in OK_RESULTS)}",
        "# HELP rvm_pull_last_run_timestamp_seconds Unix time the last run ended.",
        "# TYPE rvm_pull_last_run_timestamp_seconds gauge",
        f"rvm_pull_last_run_timestamp_seconds {last.get('at', now):.3f}",
        "# HELP rvm_pull_last_success_timestamp_seconds Unix time a run last found the device "
        "on its ring's commit.",
        "# TYPE rvm_pull_last_success_timestamp_seconds gauge",
        f"rvm_pull_last_success_timestamp_seconds {state.get('last_success', 0):.3f}",
        "# HELP rvm_pull_held 1 while the ring's commit is one whose run failed (not retried).",
        "# TYPE rvm_pull_held gauge",
        f"rvm_pull_held {int(last.get('result') == 'held')}",
        "# HELP rvm_pull_applied_info The commit this device applied last, and its ring.",
        "# TYPE rvm_pull_applied_info gauge",
        f'rvm_pull_applied_info{{ring="{state.get("ref", "")}",'
        f'commit="{applied.get("commit", "")[:12]}"}} 1',
    ]
    return "\n".join(lines) + "\n"


def record(args: argparse.Namespace, result: str, commit: str, message: str) -> None:
    """Add this run to the state file, re-read under its own lock: a run turned away as busy
    records itself while the run that holds the main lock is still going."""
    with open(f"{args.state}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _record(args, load_state(args.state), result, commit, message)


def _record(args: argparse.Namespace, state: dict, result: str, commit: str, message: str) -> None:
    now = time.time()
    at_text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    state["ref"] = args.ref
    state["last"] = {"result": result, "commit": commit, "at": now, "at_text": at_text,
                     "message": message, "forced": args.force}  # fmt: skip
    counts = state.setdefault("counts", {})
    counts[result] = counts.get(result, 0) + 1
    if result == "applied":
        state["applied"] = {"commit": commit, "at": now, "at_text": at_text}
        state.pop("failed", None)
    if result in OK_RESULTS:
        state["last_success"] = now
    if result == "failed":
        state["failed"] = {"commit": commit, "at": now, "at_text": at_text, "reason": message}
    write_atomically(Path(args.state), json.dumps(state, indent=2, sort_keys=True) + "\n")
    if args.textfile_dir:
        write_atomically(Path(args.textfile_dir) / METRICS_FILE, render_metrics(state, now))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="the repository's URL (https://, ssh://, file://)")
    p.add_argument("--ref", required=True, help="the ring's branch, e.g. ring/canary")
    p.add_argument("--host", required=True, help="this device's inventory_hostname")
    p.add_argument("--inventory", required=True, help="inventory, relative to the checkout")
    p.add_argument("--playbook", default="site.yml", help="relative to the checkout")
    p.add_argument("--ansible-pull", required=True, help="the pinned venv's ansible-pull")
    p.add_argument("--mirror", default="/var/lib/rvm-pull/mirror.git")
    p.add_argument("--checkout", default="/var/lib/rvm-pull/checkout")
    p.add_argument("--gnupg-home", default="/var/lib/rvm-pull/gnupg")
    p.add_argument("--state", default="/var/lib/rvm-pull/state.json")
    p.add_argument("--lock", default="/run/lock/rvm-pull.lock")
    p.add_argument("--textfile-dir", default="", help="node exporter textfile directory")
    p.add_argument("--token-file", default="", help="read-only deploy token (HTTP basic auth)")
    p.add_argument("--token-user", default="rvm-pull")
    p.add_argument("--ssh-key", default="", help="read-only deploy key (ssh:// repositories)")
    p.add_argument("--known-hosts", default="/etc/rvm-pull/known_hosts")
    p.add_argument("--ca-file", default="", help="CA bundle for an https repository")
    p.add_argument(
        "--vars-file", default="",
        help="extra vars for every run: what the device cannot work out itself (secrets)",
    )  # fmt: skip
    p.add_argument("--request", default="", help="GIT_PULL's request file: present -> forced")
    p.add_argument("--force", action="store_true", help="apply even an already applied commit")
    p.add_argument("--retry-failed", action="store_true", help="apply a commit that failed")
    p.add_argument("--fetch-timeout", type=float, default=300)
    p.add_argument("--run-timeout", type=float, default=3600)
    p.add_argument("extra", nargs="*", help="further ansible-pull arguments (after --)")
    args = p.parse_args(argv)
    if Path(args.inventory).is_absolute() or Path(args.playbook).is_absolute():
        p.error("--inventory and --playbook are paths inside the repository (relative)")

    lock = open(args.lock, "a")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another pull run holds the lock: this one leaves it to finish")
        record(args, "busy", "", "another run was in progress")
        return 1
    if args.request and Path(args.request).exists():
        Path(args.request).unlink()
        args.force = True  # the platform's GIT_PULL: run even at the applied commit
    try:
        result, commit, message = run(args, load_state(args.state))
    except Outcome as o:
        result, commit, message = o.result, o.commit, o.reason
    record(args, result, commit, message)
    log(f"pull {result}: {message}")
    return 0 if result in OK_RESULTS else 1


def load_state(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as e:
        log(f"{path} is not JSON ({e}); starting a new state (counts restart at 0)")
        return {}


if __name__ == "__main__":
    sys.exit(main())
