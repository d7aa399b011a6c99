"""Contender: play a recorded tape with atartape and write every byte to /dev/null.

Prints one JSON line: bytes written, chunks, the tape's total size, and (play with md5) the
number of file_end events that carried an md5sum.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

import atartape


async def consume(args: argparse.Namespace) -> dict[str, Any]:
    tape = await atartape.Tape.open(args.index)
    player = atartape.TapePlayer(tape, source_root=args.source, md5=args.md5)
    written = chunks = hashed = 0
    with open("/dev/null", "wb") as out:
        if args.mode == "stream":
            async for chunk in player.chunks(start_offset=0):
                out.write(chunk)
                written += len(chunk)
                chunks += 1
                if args.sleep_every and chunks % args.sleep_every == 0:
                    await anyio.sleep(0.001)
        else:
            async for event in player.play(start_offset=0):
                if event.type == "file_data":
                    out.write(event.data)
                    written += len(event.data)
                    chunks += 1
                elif event.type == "file_end" and getattr(event.metadata, "md5sum", None):
                    hashed += 1
    return {"bytes": written, "chunks": chunks, "total_size": tape.total_size, "md5s": hashed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--backend", choices=["asyncio", "trio", "uvloop"], default="asyncio")
    p.add_argument("--mode", choices=["stream", "play"], default="stream")
    p.add_argument("--md5", action="store_true")
    p.add_argument("--sleep-every", type=int, default=0, help="sleep 1 ms every N chunks")
    args = p.parse_args()
    if args.backend == "uvloop":
        report = anyio.run(consume, args, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        report = anyio.run(consume, args, backend=args.backend)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
