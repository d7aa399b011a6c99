"""Contender: time to first byte of a resumed stream, measured inside the process.

From just before ``Tape.open`` to the first chunk of ``stream(start_offset=total_size - 4096)``.
The first measurement in the process ("cold": imports done, nothing opened yet) is reported
apart from the ``--repeat`` ones that follow it ("warm").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import anyio

import atartape


async def once(index: str, source: str) -> float:
    start = time.perf_counter()
    tape = await atartape.Tape.open(index)
    player = atartape.TapePlayer(tape, source_root=source)
    first = 0.0
    got = 0
    async for chunk in player.chunks(start_offset=max(0, tape.total_size - 4096)):
        if not first:
            first = time.perf_counter() - start
        got += len(chunk)
    if got != min(4096, tape.total_size):
        raise SystemExit(f"resumed stream gave {got} bytes, expected 4096")
    return first


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    cold = await once(args.index, args.source)
    warm = [await once(args.index, args.source) for _ in range(args.repeat)]
    return {"ttfb_cold": cold, "ttfb_warm": statistics.median(warm) if warm else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--index", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = p.parse_args()
    print(json.dumps(anyio.run(measure, args, backend=args.backend)))


if __name__ == "__main__":
    main()
