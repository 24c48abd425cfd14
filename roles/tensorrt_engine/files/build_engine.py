#!/usr/bin/python3
"""Build one TensorRT engine on this device with trtexec, or reuse the one built before.

usage: build_engine.py --onnx MODEL.onnx --engines DIR --key KEY --describe JSON
                       --trtexec PATH --timing-cache FILE [--timeout S] [--min-free-mb N]
                       [--lock FILE] [--retry-failed] [--check] -- TRTEXEC_FLAGS...

Installed and run by the tensorrt_engine role. Prints one JSON object:
  {"status": "reused" | "built" | "failed" | "skipped" | "would-build", "changed": bool,
   "engine": path, "reason": str, "seconds": float, "gate": <gate.json or null>}

- DIR/KEY/ holds model.engine, key.json (what KEY stands for), build.log and, once the
  gate ran, gate.json. A complete KEY/ is only ever made by renaming a finished
  DIR/.build-KEY-<pid>/ into place: an interrupted build leaves no engine under a valid key,
  and its leftovers are removed by the next build.
- A failed build is recorded in DIR/.failed-KEY.json and not retried (a build costs
  minutes and gigabytes on the device) unless --retry-failed.
- One build at a time per device (an exclusive lock), with a timeout that kills trtexec's
  whole process group, after a free-memory check. trtexec's output goes to build.log and,
  where systemd-cat exists, to the journal (identifier tensorrt-engine-build).

Stdlib only: it runs with the device's python3.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

JOURNAL_ID = "tensorrt-engine-build"


def mem_available_mb(meminfo: str = "/proc/meminfo") -> int:
    for line in Path(meminfo).read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tail(text: str, lines: int = 8) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def to_journal(journal: subprocess.Popen | None, chunk: bytes) -> subprocess.Popen | None:
    """Copy to the journal; a journal that went away never stops a build."""
    if journal is None or journal.stdin is None:
        return None
    try:
        journal.stdin.write(chunk)
        journal.stdin.flush()
    except OSError:
        journal.kill()
        return None
    return journal


def run_trtexec(argv: list[str], log: Path, timeout: float) -> tuple[int | None, str]:
    """Run trtexec in its own process group; (exit code or None on timeout, output)."""
    journal = None
    if shutil.which("systemd-cat"):
        journal = subprocess.Popen(
            ["systemd-cat", f"--identifier={JOURNAL_ID}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        code: int | None = None
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            chunk = proc.stdout.read()
            if chunk:
                out.write(chunk)
                journal = to_journal(journal, chunk)
            code = proc.poll()
            if code is not None:
                rest = proc.stdout.read() or b""
                out.write(rest)
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                code = None
                break
            time.sleep(0.2)
    if journal is not None:
        try:
            journal.communicate(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            journal.kill()
    return code, log.read_text(errors="replace")


def failure_reason(record: dict) -> str:
    # The same words on the run that failed and on every later one: the host's record of
    # the engine must not change while nothing does.
    return (
        f"{record.get('reason', 'failed')} (build of {record.get('when', '?')}; later runs do "
        "not retry it: set tensorrt_engine_retry_failed to build again)"
    )


def build(args: argparse.Namespace, flags: list[str]) -> dict:
    engines = Path(args.engines)
    final = engines / args.key
    failed = engines / f".failed-{args.key}.json"
    engine = final / "model.engine"
    if (final / "key.json").is_file() and engine.is_file() and engine.stat().st_size > 0:
        return {"status": "reused", "changed": False, "engine": str(engine), "reason": "",
                "gate": read_json(final / "gate.json")}  # fmt: skip
    record = read_json(failed)
    if record and not args.retry_failed:
        return {"status": "failed", "changed": False, "engine": "", "gate": None,
                "reason": failure_reason(record)}  # fmt: skip
    if args.check:
        return {"status": "would-build", "changed": True, "engine": str(engine), "reason": "",
                "gate": None}  # fmt: skip
    if not os.access(args.trtexec, os.X_OK):
        return {"status": "failed", "changed": False, "engine": "", "gate": None,
                "reason": f"no trtexec at {args.trtexec} (JetPack's libnvinfer-bin; see "
                "jetpack_packages and tensorrt_engine_trtexec)"}  # fmt: skip
    free = mem_available_mb()
    if free < args.min_free_mb:
        return {"status": "skipped", "changed": False, "engine": "", "gate": None,
                "reason": f"only {free} MiB memory available, a build needs "
                f"tensorrt_engine_min_free_mb={args.min_free_mb}; nothing was stopped to make "
                "room, the next run tries again"}  # fmt: skip
    engines.mkdir(parents=True, exist_ok=True)
    for stale in engines.glob(f".build-{args.key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = engines / f".build-{args.key}-{os.getpid()}"
    tmp.mkdir()
    Path(args.timing_cache).parent.mkdir(parents=True, exist_ok=True)
    argv = [args.trtexec, f"--onnx={args.onnx}", f"--saveEngine={tmp / 'model.engine'}",
            f"--timingCacheFile={args.timing_cache}", *flags]  # fmt: skip
    started = time.monotonic()
    code, output = run_trtexec(argv, tmp / "build.log", args.timeout)
    seconds = round(time.monotonic() - started, 1)
    built = tmp / "model.engine"
    if code is None:
        reason = f"trtexec did not finish within {args.timeout:g}s and was killed"
    elif code != 0:
        reason = f"trtexec exited {code}: {tail(output)}"
    elif not built.is_file() or built.stat().st_size == 0:
        reason = f"trtexec exited 0 but wrote no engine: {tail(output)}"
    else:
        reason = ""
    if reason:
        shutil.rmtree(tmp, ignore_errors=True)
        record = {"reason": reason, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "argv": argv, "log_tail": output[-4000:]}  # fmt: skip
        write_json(failed, record)
        return {"status": "failed", "changed": True, "engine": "", "reason": failure_reason(record),
                "seconds": seconds, "gate": None}  # fmt: skip
    describe = json.loads(args.describe)
    write_json(tmp / "key.json", {**describe, "key": args.key, "trtexec": argv,
               "build_seconds": seconds})  # fmt: skip
    with open(built, "rb+") as f:
        os.fsync(f.fileno())
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(engines)
    failed.unlink(missing_ok=True)
    return {"status": "built", "changed": True, "engine": str(engine), "reason": "",
            "seconds": seconds, "gate": None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", required=True)
    p.add_argument("--engines", required=True, help="the model version's engines/ directory")
    p.add_argument("--key", required=True)
    p.add_argument("--describe", required=True, help="JSON of what the key stands for")
    p.add_argument("--trtexec", required=True)
    p.add_argument("--timing-cache", required=True)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--min-free-mb", type=int, default=0)
    p.add_argument("--lock", default="/run/lock/tensorrt-engine-build.lock")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--check", action="store_true", help="say what would happen, build nothing")
    p.add_argument("flags", nargs="*", help="trtexec flags after --")
    args = p.parse_args(argv)
    if "/" in args.key or args.key.startswith("."):
        p.error(f"--key {args.key!r} must be a plain directory name")
    if args.check:
        result = build(args, args.flags)
    else:
        with open(args.lock, "w") as lock:
            # Another build on this device (a second ansible run): wait for it, then reuse.
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = build(args, args.flags)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
