#!/usr/bin/python3
"""Write an htpasswd file (bcrypt) for rclone serve restic from JSON on stdin.

Usage: htpasswd_sync.py FILE < [{"user": ..., "password": ...}, ...]

Keeps an existing entry whose hash still matches its password (bcrypt salts every hash
afresh: hashing on every run would rewrite the file every run), so a re-run with the same
credentials leaves the file alone. Prints "changed" or "unchanged".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bcrypt


def main() -> int:
    path = Path(sys.argv[1])
    wanted = json.loads(sys.stdin.read())
    old: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            user, _, digest = line.partition(":")
            old[user] = digest
    lines = []
    for entry in sorted(wanted, key=lambda e: e["user"]):
        user, password = entry["user"], entry["password"].encode()
        digest = old.get(user, "")
        if not (digest.startswith("$2") and bcrypt.checkpw(password, digest.encode())):
            digest = bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode()
        lines.append(f"{user}:{digest}")
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_text() == text:
        print("unchanged")
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    st = path.parent.stat()
    os.chown(tmp, 0, st.st_gid)
    os.replace(tmp, path)
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
