"""Contender: the Python floor. Read every regular file once into one reused 128 KiB buffer.

The bytes read go to /dev/null like every contender's stream. With ``--md5`` each file is also
hashed with hashlib md5 in this one thread (the floor for a stream that hashes every file).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

BUFFER = 128 * 1024


def walk_files(root: str) -> list[str]:
    files: list[str] = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files.append(entry.path)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--md5", action="store_true")
    args = p.parse_args()
    new_md5: Callable[[], Any] | None = None
    if args.md5:
        import hashlib  # only here: loading OpenSSL adds about 5 MiB to the floor's RSS

        new_md5 = hashlib.md5
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    total = hashed = 0
    with open("/dev/null", "wb") as out:
        for path in walk_files(args.source):
            md5 = new_md5() if new_md5 is not None else None
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    out.write(view[:n])
                    if md5 is not None:
                        md5.update(view[:n])
                    total += n
            if md5 is not None:
                md5.hexdigest()
                hashed += 1
    print(json.dumps({"bytes": total, "md5s": hashed}))


if __name__ == "__main__":
    main()
