"""Contender: the Python floor. Read every regular file once and write the bytes to /dev/null.

Without ``--threads``: one thread reads each file in turn into one reused 128 KiB buffer; with
``--md5`` each file is also hashed with hashlib md5 in that thread (the floor for a stream that
hashes every file).

With ``--threads N``: the parallel read floor. N threads share the work: whole files, and large
files cut into pieces of 8 MiB, each read with ``os.preadv`` into the thread's own 1 MiB buffer.
The order of the bytes is lost (it is a floor for reading, not a stream).

Prints one JSON line: bytes read, files hashed, and ``inproc_s``, the seconds from the start of
the walk to the last byte (interpreter start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

BUFFER = 128 * 1024
PARALLEL_BUFFER = 1024 * 1024
PIECE = 8 * 1024 * 1024


def walk_files(root: str) -> list[tuple[str, int]]:
    """Every regular file under ``root`` with its size, symlinks not followed."""
    files: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files.append((entry.path, entry.stat(follow_symlinks=False).st_size))
    return files


def sequential(source: str, md5_on: bool) -> dict[str, Any]:
    new_md5: Callable[[], Any] | None = None
    if md5_on:
        import hashlib  # only here: loading OpenSSL adds about 5 MiB to the floor's RSS

        new_md5 = hashlib.md5
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    total = hashed = 0
    with open("/dev/null", "wb") as out:
        for path, _size in walk_files(source):
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
    return {"bytes": total, "md5s": hashed}


def parallel(source: str, threads: int) -> dict[str, Any]:
    work: list[tuple[str, int, int]] = []  # path, first byte, end
    for path, size in walk_files(source):
        if size <= PIECE:
            work.append((path, 0, size))
        else:
            work += [(path, at, min(at + PIECE, size)) for at in range(0, size, PIECE)]
    lock = threading.Lock()
    state = {"next": 0, "bytes": 0}
    errors: list[BaseException] = []

    def reader() -> None:
        buf = bytearray(PARALLEL_BUFFER)
        view = memoryview(buf)
        got = 0
        out = os.open(os.devnull, os.O_WRONLY)
        try:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] = i + 1
                if i >= len(work):
                    break
                path, at, end = work[i]
                fd = os.open(path, os.O_RDONLY)
                try:
                    while at < end:
                        n = os.preadv(fd, [view[: min(PARALLEL_BUFFER, end - at)]], at)
                        if n == 0:
                            break
                        os.write(out, view[:n])
                        at += n
                        got += n
                finally:
                    os.close(fd)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            os.close(out)
            with lock:
                state["bytes"] += got

    pool = [threading.Thread(target=reader) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return {"bytes": state["bytes"], "md5s": 0, "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--md5", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="parallel read floor with N threads")
    args = p.parse_args()
    started = time.perf_counter()
    if args.threads:
        report = parallel(args.source, args.threads)
    else:
        report = sequential(args.source, args.md5)
    report["inproc_s"] = time.perf_counter() - started
    print(json.dumps(report))


if __name__ == "__main__":
    main()
