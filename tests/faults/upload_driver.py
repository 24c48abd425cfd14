"""A small real program for the fault tests: the real spool and uploader in one process.

    python upload_driver.py stream --spool DIR --url URL --key-file F --start N
        enqueue deposits k-<N>, k-<N+1>, ... while uploading; after each enqueue
        returns (the deposit is accepted) its uuid is printed on its own line.
    python upload_driver.py drain --spool DIR --url URL --key-file F
        upload what the spool holds, exit 0 when it is empty.

The fault test kills `stream` with SIGKILL at random moments, so stdout lines
are the ground truth of what was accepted.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from rvm_detector.config import UploadConfig
from rvm_detector.platform import PlatformClient
from rvm_detector.spool import Spool
from rvm_detector.uploader import Uploader

CFG = UploadConfig(min_concurrency=1, max_concurrency=4, backoff_base_s=0.02, backoff_max_s=0.3)


def image_for(uuid: str, size: int = 4096) -> bytes:
    """Deterministic JPEG-tagged bytes per uuid, so the receiver can check integrity."""
    seed = hashlib.sha256(uuid.encode()).digest()
    return b"\xff\xd8\xff\xe0" + (seed * (size // 32 + 1))[: size - 4]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["stream", "drain"])
    ap.add_argument("--spool", type=Path, required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--key-file", type=Path, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--count", type=int, default=100_000)
    args = ap.parse_args()
    spool = Spool(args.spool)
    client = PlatformClient(args.url, args.key_file.read_text().strip(), read_timeout_s=2.0)
    uploader = Uploader(spool, client, CFG)
    uploader.start()
    if args.mode == "drain":
        ok = uploader.wait_drained(120)
        uploader.stop()
        spool.close()
        return 0 if ok else 1
    for i in range(args.start, args.start + args.count):
        uuid = f"k-{i:07d}"
        image = image_for(uuid)
        spool.enqueue(uuid=uuid, status="ACCEPTED", data={"client_ref": uuid}, image=image)
        sys.stdout.write(uuid + "\n")
        sys.stdout.flush()
        time.sleep(0.002)
    uploader.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
