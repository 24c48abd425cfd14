#!/usr/bin/env python3
"""Print the bcrypt hash of the password on stdin for the web config's basic_auth_users.

Usage: web_password_hash.py WEB_CONFIG USER < password

Reuses the hash already in WEB_CONFIG for USER when it matches the password (bcrypt
salts every hash afresh, so hashing on every run would rewrite the file every run).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import bcrypt


def main() -> int:
    config, user = Path(sys.argv[1]), sys.argv[2]
    password = sys.stdin.buffer.read()
    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    found = re.search(
        rf"^\s+['\"]?{re.escape(user)}['\"]?:\s*['\"]?(\$2[aby]\$[^'\"\s]+)", text, re.M
    )
    if found and bcrypt.checkpw(password, found.group(1).encode()):
        print(found.group(1))
    else:
        print(bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
