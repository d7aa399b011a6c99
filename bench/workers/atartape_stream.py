"""Contender: play a recorded tape with atartape and write every byte to /dev/null.

Prints one JSON line: bytes written, chunks, the tape's total size, (play with md5) the number
of file_end events that carried an md5sum, and ``inproc_s``: the seconds spent consuming
``chunks()`` (or ``play()``) alone, after the imports and ``Tape.open`` (the in-process
throughput, without interpreter start-up).

``--view`` streams a view of the tape (``plain``, ``zstd``, ``age``, ``zstd+age``; see
``atartape.views``); ``total_size`` is then the view's size. Without it the player plays the
view the tape was recorded with.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import anyio

from atartape import Tape, TapePlayer


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    tape = await Tape.open(args.index)
    player = TapePlayer(tape, source_root=args.source, md5=args.md5, view=args.view)
    written = chunks = hashed = 0
    with open("/dev/null", "wb") as out:
        started = time.perf_counter()
        if args.mode == "stream":
            async for chunk in player.chunks(0, player.size):
                out.write(chunk)
                written += len(chunk)
                chunks += 1
                if args.sleep_every and chunks % args.sleep_every == 0:
                    await anyio.sleep(0.001)
        else:
            async for event in player.play(0, tape.total_size):
                if event.type == "file_data":
                    out.write(event.data)
                    written += len(event.data)
                    chunks += 1
                elif event.type == "file_end" and getattr(event.metadata, "md5sum", None):
                    hashed += 1
        elapsed = time.perf_counter() - started
    return {
        "bytes": written,
        "chunks": chunks,
        "total_size": player.size,
        "view": player.view,
        "md5s": hashed,
        "inproc_s": elapsed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--backend", choices=["asyncio", "trio", "uvloop"], default="asyncio")
    p.add_argument("--mode", choices=["stream", "play"], default="stream")
    p.add_argument("--md5", action="store_true")
    p.add_argument("--view", choices=["plain", "zstd", "age", "zstd+age"], help="a view to stream")
    p.add_argument("--sleep-every", type=int, default=0, help="sleep 1 ms every N chunks")
    args = p.parse_args()
    # A view's library is loaded up front (as an application serving views has it loaded), so
    # that its import is not timed as part of the stream.
    if args.view and "zstd" in args.view:
        import zstandard  # noqa: F401
    if args.view and "age" in args.view:
        import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    if args.backend == "uvloop":
        report = anyio.run(consume, args, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        report = anyio.run(consume, args, backend=args.backend)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
