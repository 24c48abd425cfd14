"""`rvm-detector spool status|retry-dead|export|backup|restore`: the operator's view of the spool.

Safe while the service runs: SQLite WAL lets these read beside the uploader,
and `retry-dead` is one short transaction the uploader picks up. `backup` takes a
consistent snapshot of the live spool (for restic, roles/backup); `restore` puts one
back while the detector is stopped (playbooks/restore.yml).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rvm_detector.configfile import ConfigError, load_config
from rvm_detector.spool import Spool, SpoolError, restore, snapshot


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spool", help="inspect the upload spool, retry dead letters, export")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="configuration file (uses spool.dir)")
    where.add_argument("--dir", type=Path, help="spool directory, without a configuration")
    actions = p.add_subparsers(dest="spool_command", required=True)
    s = actions.add_parser("status", help="depth, age of the oldest deposit, bytes, dead letters")
    s.add_argument("--json", action="store_true")
    r = actions.add_parser("retry-dead", help="send dead letters again (all, or --uuid)")
    r.add_argument("--uuid", action="append", help="only this deposit (repeatable)")
    e = actions.add_parser("export", help="deposits as JSON lines (with dead-letter responses)")
    e.add_argument("--state", choices=["pending", "dead"], help="only these")
    e.add_argument("--out", type=Path, help="write here instead of stdout")
    e.add_argument("--images", type=Path, help="also copy the images into this directory")
    b = actions.add_parser(
        "backup", help="a consistent snapshot of the live spool (+ its images) into DEST"
    )
    b.add_argument("dest", type=Path, help="directory, updated in place on each run")
    b.add_argument("--json", action="store_true")
    rs = actions.add_parser(
        "restore", help="put a snapshot made by `backup` in place (detector stopped)"
    )
    rs.add_argument("source", type=Path, help="the directory `backup` wrote")
    rs.add_argument(
        "--force", action="store_true", help="replace a spool that still holds deposits"
    )
    p.set_defaults(func=run)


def _open(args: argparse.Namespace) -> Spool:
    if args.config is not None:
        config = load_config(args.config)
        return Spool(config.spool.dir, config.spool.max_bytes)
    if not (args.dir / "spool.db").is_file():
        raise SpoolError(f"{args.dir} holds no spool.db; pass the spool.dir of the config")
    return Spool(args.dir)


def _spool_dir(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return load_config(args.config).spool.dir
    return args.dir


def _snapshot_command(args: argparse.Namespace) -> int:
    """backup/restore: never open a Spool here; opening one tidies (removes) files the
    running detector may be about to commit."""
    try:
        directory = _spool_dir(args)
        if args.spool_command == "backup":
            result = snapshot(directory, args.dest)
            verb = f"snapshot of {directory} in {args.dest}"
        else:
            result = restore(args.source, directory, force=args.force)
            verb = f"restored {args.source} into {directory}"
    except (ConfigError, SpoolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        print(
            f"{verb}: {result.deposits} deposit(s) ({result.pending} pending, "
            f"{result.dead} dead), {result.images} image(s), {result.masks} mask upload(s); "
            f"{result.images_gone} image(s) delivered or shed while it was taken"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.spool_command in ("backup", "restore"):
        return _snapshot_command(args)
    try:
        spool = _open(args)
    except (ConfigError, SpoolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.spool_command == "status":
            return _status(spool, args.json)
        if args.spool_command == "retry-dead":
            n = spool.retry_dead(args.uuid)
            print(f"{n} dead letter(s) queued for upload again")
            return 0
        return _export(spool, args)
    finally:
        spool.close()


def _status(spool: Spool, as_json: bool) -> int:
    s = spool.stats()
    if as_json:
        print(json.dumps(s.to_dict()))
        return 0
    print(f"pending deposits:     {s.pending} ({s.shed_pending} without image, shed)")
    print(f"oldest pending:       {s.oldest_age_s:.0f} s")
    print(f"dead letters:         {s.dead}  (rvm-detector spool ... export --state dead)")
    print(f"bytes:                {s.image_bytes} images + {s.db_bytes} database")
    print(f"budget:               {spool.max_bytes}")
    return 0


def _export(spool: Spool, args: argparse.Namespace) -> int:
    out = args.out.open("w") if args.out else sys.stdout
    if args.images:
        args.images.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        for row in spool.export(args.state):
            if args.images and row["image_name"]:
                src = spool.images / row["image_name"]
                if src.exists():
                    shutil.copy2(src, args.images / row["image_name"])
            out.write(json.dumps(row) + "\n")
            n += 1
    finally:
        if args.out:
            out.close()
    print(f"exported {n} deposit(s)", file=sys.stderr)
    return 0
