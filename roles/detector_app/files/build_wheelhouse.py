#!/usr/bin/env python3
"""Build the detector's wheel and a wheelhouse of its runtime dependencies, once.

Runs on the Ansible controller (the only machine that reaches PyPI). The result
is cached under --cache by a key over the app's source, the target platform and
Python, and the constraints: a second call with the same inputs changes nothing.

    build_wheelhouse.py --app app --cache .cache/wheelhouse \
        --platform manylinux_2_35_x86_64 --python-version 3.11

Prints one JSON object: {"changed", "dir", "key", "app_version", "requirements"}.
The directory holds the wheels, `requirements.txt` (every wheel pinned, the app
included) and `wheelhouse.json` (inputs and each wheel's sha256). It is built
under a temporary name and renamed when complete, so a half-built wheelhouse is
never used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Bump when the layout of the output changes, so old caches are not reused.
FORMAT = "2"
SOURCE_GLOBS = ("pyproject.toml", "README.md", "src/**/*.py", "src/**/*.typed")


def source_files(app: Path) -> list[Path]:
    files: set[Path] = set()
    for pattern in SOURCE_GLOBS:
        files.update(p for p in app.glob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    return sorted(files)


def source_hash(app: Path) -> str:
    h = hashlib.sha256()
    for p in source_files(app):
        h.update(str(p.relative_to(app)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def cache_key(app: Path, platforms: list[str], python_version: str, constraints: list[str]) -> str:
    h = hashlib.sha256()
    h.update(f"format={FORMAT}\n".encode())
    for p in source_files(app):
        h.update(str(p.relative_to(app)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    h.update(("platforms=" + ",".join(platforms) + "\n").encode())
    h.update(f"python={python_version}\n".encode())
    h.update(("constraints=" + "\n".join(constraints) + "\n").encode())
    return h.hexdigest()[:20]


def app_version(app: Path) -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (app / "pyproject.toml").read_text(), re.M)
    if not m:
        raise SystemExit(f'error: no version = "..." in {app / "pyproject.toml"}')
    return m.group(1)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"error: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
            f"{proc.stderr[-3000:]}"
        )


def expand_platforms(platforms: list[str]) -> list[str]:
    """pip takes --platform literally: manylinux_2_35_x86_64 also runs manylinux_2_17..2_34
    (and manylinux2014) wheels, so every older glibc tag is listed explicitly."""
    tags: list[str] = []
    for plat in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", plat)
        if not m:
            tags.append(plat)
            continue
        glibc, arch = int(m.group(1)), m.group(2)
        tags += [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 16, -1)]
        tags.append(f"manylinux2014_{arch}")
    return list(dict.fromkeys(tags))


def _dist_name(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def build(args: argparse.Namespace) -> dict[str, object]:
    app = args.app.resolve()
    key = cache_key(app, args.platform, args.python_version, args.constraint)
    out = args.cache.resolve() / key
    version = app_version(app)
    result = {"dir": str(out), "key": key, "app_version": version, "source": source_hash(app)}
    if (out / "wheelhouse.json").is_file():
        meta = json.loads((out / "wheelhouse.json").read_text())
        return {**result, "changed": False, "requirements": meta["requirements"]}
    # A device that is its own controller (pull mode) has the wheelhouse of its current
    # release unpacked already, and no package index to build one from.
    installed = args.installed / key if args.installed else None
    if installed and (installed / "wheelhouse.json").is_file():
        meta = json.loads((installed / "wheelhouse.json").read_text())
        return {**result, "dir": str(installed), "changed": False,
                "requirements": meta["requirements"]}  # fmt: skip

    args.cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=args.cache))
    try:
        with tempfile.TemporaryDirectory() as src_copy:
            # Build from a copy so the source tree gets no build/ or egg-info.
            src = Path(src_copy) / "app"
            shutil.copytree(
                app,
                src,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "tests"),
            )
            _run(
                [
                    args.python,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "--no-build-isolation",
                    "--quiet",
                    "-w",
                    str(tmp),
                    str(src),
                ]
            )
        app_wheel = next(tmp.glob("rvm_detector-*.whl"))
        constraints = tmp / "constraints.txt"
        constraints.write_text("".join(c + "\n" for c in args.constraint))
        abi = "cp" + args.python_version.replace(".", "")
        cmd = [
            args.python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--python-version",
            args.python_version,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            "-c",
            str(constraints),
            "-d",
            str(tmp),
        ]
        for plat in expand_platforms(args.platform):
            cmd += ["--platform", plat]
        _run([*cmd, str(app_wheel)])
        constraints.unlink()
        wheels = sorted(tmp.glob("*.whl"))
        requirements = [f"{n}=={v}" for n, v in sorted(_dist_name(w) for w in wheels)]
        (tmp / "requirements.txt").write_text("".join(r + "\n" for r in requirements))
        meta = {
            "key": key,
            "app_version": version,
            "platforms": args.platform,
            "python_version": args.python_version,
            "constraints": args.constraint,
            "requirements": requirements,
            "wheels": {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels},
        }
        (tmp / "wheelhouse.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        # One archive to copy to devices; wheelhouse.json goes last, so a device that has
        # it has the whole wheelhouse (tar extracts in order).
        with tarfile.open(tmp / "wheelhouse.tar", "w") as tar:
            for f in [
                *sorted(tmp.glob("*.whl")),
                tmp / "requirements.txt",
                tmp / "wheelhouse.json",
            ]:
                tar.add(f, arcname=f"{key}/{f.name}")
        if out.exists():  # a concurrent build finished first; theirs is as good as ours
            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**result, "changed": True, "requirements": requirements}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--app", type=Path, required=True, help="the app's source (with pyproject.toml)"
    )
    ap.add_argument("--cache", type=Path, required=True, help="wheelhouses are kept here by key")
    ap.add_argument(
        "--platform",
        action="append",
        required=True,
        help="pip platform tag of the target, e.g. manylinux_2_35_aarch64 (repeatable)",
    )
    ap.add_argument("--python-version", required=True, help="target CPython, e.g. 3.10")
    ap.add_argument(
        "--constraint",
        action="append",
        default=[],
        help="pip constraint such as 'numpy<2' (repeatable)",
    )
    ap.add_argument(
        "--installed",
        type=Path,
        help="wheelhouses unpacked on this machine (a device in pull mode): one with the key is "
        "used as it is",
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter whose pip builds")
    args = ap.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        ap.error(f"--python-version must look like 3.10, got {args.python_version!r}")
    print(json.dumps(build(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
