#!/usr/bin/python3
"""Retention and integrity checks of the devices' restic repositories (roles/backup_server).

`prune`: restic forget --prune with the keep-* policy, per repository.
`check`: restic check --read-data-subset, per repository.
Every repository under --data-dir with a password file in --passwords-dir is handled; restic
runs as --user (the repositories' owner, also rclone's). Each run writes
rvm_backup_repository_<action>.prom into the node exporter's textfile directory
(atomically) with one series per repository; exit status 1 when any repository failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def restic(args: argparse.Namespace, repo: Path, *rest: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "/usr/bin/setpriv",
            f"--reuid={args.user}",
            f"--regid={args.user}",
            "--init-groups",
            "/usr/bin/restic",
            "--repo",
            str(repo),
            "--password-file",
            str(Path(args.passwords_dir) / repo.name),
            "--no-cache",
            *rest,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def size_bytes(repo: Path) -> int:
    total = 0
    for root, _, files in os.walk(repo):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def series(
    action: str, repository: str, ok: bool, duration: float, snapshots: int | None, size: int
) -> list[str]:
    """One repository's lines of the textfile (names: monitoring/rules/backup.yml). Size and
    snapshot count carry the action too: prune and check each report them, and the node
    exporter drops a series that two textfiles both hold (logging an error every scrape)."""
    label = f'{{repository="{repository}"}}'
    seen_by = f'{{action="{action}",repository="{repository}"}}'
    metric = f"rvm_backup_repository_{action}"
    lines = [
        f"{metric}_ok{label} {int(ok)}",
        f"{metric}_timestamp_seconds{label} {time.time():.3f}",
        f"{metric}_duration_seconds{label} {duration:.3f}",
        f"rvm_backup_repository_size_bytes{seen_by} {size}",
    ]
    if snapshots is not None:
        lines.append(f"rvm_backup_repository_snapshots{seen_by} {snapshots}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["prune", "check"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--passwords-dir", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--textfile-dir", default="/var/lib/prometheus/node-exporter")
    p.add_argument("--keep-daily", type=int, default=7)
    p.add_argument("--keep-weekly", type=int, default=4)
    p.add_argument("--keep-monthly", type=int, default=6)
    p.add_argument("--read-data-subset", default="5%")
    args = p.parse_args(argv)

    repos = sorted(
        d
        for d in Path(args.data_dir).iterdir()
        if (d / "config").is_file() and (Path(args.passwords_dir) / d.name).is_file()
    )
    lines = []
    failed = []
    for repo in repos:
        started = time.monotonic()
        if args.action == "prune":
            keep = [
                f"--keep-daily={args.keep_daily}",
                f"--keep-weekly={args.keep_weekly}",
                f"--keep-monthly={args.keep_monthly}",
            ]
            proc = restic(args, repo, "forget", "--prune", *keep)
        else:
            proc = restic(args, repo, "check", f"--read-data-subset={args.read_data_subset}")
        ok = proc.returncode == 0
        if ok:
            print(f"{args.action} of repository {repo.name}: ok", flush=True)
        else:
            failed.append(repo.name)
            detail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            print(
                f"{args.action} of repository {repo.name} FAILED (exit {proc.returncode}): "
                f"{detail}",
                file=sys.stderr,
                flush=True,
            )
        snaps = restic(args, repo, "snapshots", "--json")
        count = len(json.loads(snaps.stdout) or []) if snaps.returncode == 0 else None
        lines += series(
            args.action, repo.name, ok, time.monotonic() - started, count, size_bytes(repo)
        )
    out = Path(args.textfile_dir) / f"rvm_backup_repository_{args.action}.prom"
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(sorted(set(lines))) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    if failed:
        print(f"{args.action} failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"{args.action}: {len(repos)} repositories ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
