#!/usr/bin/python3
"""JETSON SIMULATION: build the lab's stand-in of NVIDIA's Jetson apt repository.

usage: build-apt-repo.py SPEC.json

SPEC names the output directory, the suite, the repositories (common, <soc>) and the
stand-in packages of each. Every package is a tiny .deb (dpkg-deb) of NVIDIA's name
and version that installs a marker file saying it is a simulation. Each repository
gets Packages, a Release listing their sha256, and InRelease/Release.gpg signed with
a key generated here once (GNUPGHOME beside the repository, 0700), whose public part
is exported next to the repository for apt's signed-by.

Idempotent: prints "unchanged" when the spec, this script and the key are as at the
last build, "built" after (re)building. Stdlib, dpkg-deb and gpg only.
"""

import email.utils
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KEY_UID = "Jetson SIMULATION apt signing key (lab only) <jetson-simulation@lab.invalid>"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw)


def ensure_key(home: Path, public: Path) -> bool:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    made = False
    if KEY_UID not in run("gpg", "--batch", "--list-secret-keys", env=env).stdout:
        run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", KEY_UID,
            "ed25519", "sign", "never", env=env)  # fmt: skip
        made = True
    exported = run("gpg", "--batch", "--armor", "--export", KEY_UID, env=env).stdout
    if made or not public.exists() or public.read_text() != exported:
        public.write_text(exported)
        public.chmod(0o644)
        made = True
    return made


def build_deb(pkg: dict, pool: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        doc = root / "usr/share/doc" / pkg["name"]
        doc.mkdir(parents=True)
        (doc / "JETSON-SIMULATION").write_text(
            f"{pkg['name']} {pkg['version']}: a JETSON SIMULATION stand-in built by the lab\n"
            "(lab/roles/jetson_simulation). It contains no NVIDIA software and does nothing.\n"
        )
        for path, content in (pkg.get("files") or {}).items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            if "/bin/" in path:  # a stand-in tool (trtexec) must run
                target.chmod(0o755)
        control = root / "DEBIAN/control"
        control.parent.mkdir()
        fields = {
            "Package": pkg["name"],
            "Version": pkg["version"],
            "Architecture": "all",
            "Maintainer": "RVM lab <jetson-simulation@lab.invalid>",
            "Section": "simulation",
            "Priority": "optional",
            "Depends": pkg.get("depends", ""),
            "Description": f"JETSON SIMULATION stand-in: {pkg.get('description', pkg['name'])}\n"
            " Lab only. Same name and version as NVIDIA's package, none of its content.",
        }
        control.write_text("".join(f"{k}: {v}\n" for k, v in fields.items() if v))
        deb = pool / f"{pkg['name']}_{pkg['version'].replace(':', '%3a')}_all.deb"
        run("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb))
        return deb


def stanza(deb: Path, base: Path) -> str:
    control = run("dpkg-deb", "-f", str(deb)).stdout.rstrip("\n")
    return (
        f"{control}\nFilename: {deb.relative_to(base)}\nSize: {deb.stat().st_size}\n"
        f"MD5sum: {hashlib.md5(deb.read_bytes()).hexdigest()}\nSHA256: {sha256(deb)}\n"
    )


def build_repo(base: Path, suite: str, archs: list[str], pkgs: list[dict], home: Path) -> None:
    if base.exists():
        shutil.rmtree(base)
    pool = base / "pool/main"
    pool.mkdir(parents=True)
    packages = "\n".join(stanza(build_deb(p, pool), base) for p in pkgs)
    dists = base / "dists" / suite
    indexes = []
    for arch in archs:
        d = dists / "main" / f"binary-{arch}"
        d.mkdir(parents=True)
        (d / "Packages").write_text(packages)
        (d / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
        indexes += [d / "Packages", d / "Packages.gz"]
    sums = "".join(f" {sha256(f)} {f.stat().st_size} {f.relative_to(dists)}\n" for f in indexes)
    (dists / "Release").write_text(
        "Origin: JETSON SIMULATION\nLabel: JETSON SIMULATION (lab only)\n"
        f"Suite: {suite}\nCodename: {suite}\nDate: {email.utils.formatdate(usegmt=True)}\n"
        f"Architectures: {' '.join(archs)}\nComponents: main\n"
        "Description: stand-in of NVIDIA's Jetson repository for the lab\n"
        f"SHA256:\n{sums}"
    )
    env = {**os.environ, "GNUPGHOME": str(home)}
    sign = ["gpg", "--batch", "--yes", "--local-user", KEY_UID]
    run(*sign, "--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release"), env=env)
    run(*sign, "-abs", "-o", str(dists / "Release.gpg"), str(dists / "Release"), env=env)


def main() -> int:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    out = Path(spec["dir"])
    out.mkdir(parents=True, exist_ok=True)
    home = out.parent / "gnupg"
    public = out / "jetson-simulation.asc"
    new_key = ensure_key(home, public)
    digest = hashlib.sha256(
        spec_path.read_bytes() + Path(__file__).read_bytes() + public.read_bytes()
    ).hexdigest()
    stamp = out / ".built"
    if not new_key and stamp.exists() and stamp.read_text() == digest:
        print("unchanged")
        return 0
    for name, pkgs in spec["repos"].items():
        build_repo(out / "jetson" / name, spec["suite"], spec["architectures"], pkgs, home)
    stamp.write_text(digest)
    print("built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
