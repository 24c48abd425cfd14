#!/usr/bin/env python3
"""relink.py TARGET LINK: point the symlink LINK at TARGET atomically.

A new link is made under a temporary name and renamed over the old one (rename(2)), so
a reader sees the old target or the new one, never neither; then the directory is
fsynced, so the switch survives a power cut. Prints "changed" or "unchanged".
"""

import os
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: relink.py TARGET LINK", file=sys.stderr)
        return 2
    target, link = sys.argv[1:3]
    if os.path.islink(link) and os.readlink(link) == target:
        print("unchanged")
        return 0
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fd = os.open(os.path.dirname(link) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
