"""Contender: record a folder into an atartape index (``atartape.record``).

Also the untimed preparation of the views group: ``--compress zstd`` (with ``--level`` and
``--frame-size``) and ``--seal`` (for an X25519 recipient made here; the file key is kept beside
the index, where ``TapePlayer`` finds it) record the views; ``--plain-out FILE`` then writes the
plain tape to ``FILE`` (the bytes the floors of the views group read).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import anyio

import atartape


async def record(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.compress:
        options.update(compress=args.compress, level=args.level, frame_size=args.frame_size)
    if args.seal:
        from atartape.format import age

        options["seal"] = [str(age.X25519Identity.generate().recipient)]
    tape = await atartape.record(args.source, index_path=args.index, overwrite=True, **options)
    report: dict[str, Any] = {
        "total_size": tape.total_size,
        "file_count": tape.file_count,
        "fingerprint": tape.fingerprint,
        "views": {view: tape.view_size(view) for view in tape.views},
    }
    if args.plain_out:
        player = atartape.TapePlayer(tape, view="plain", md5=False)
        fd = os.open(args.plain_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            report["plain_written"] = await player.write_to(fd)
        finally:
            os.close(fd)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--compress", choices=["zstd"], help="record a seekable zstd view")
    p.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    p.add_argument("--frame-size", default="4MiB", help="plain bytes per zstd frame")
    p.add_argument("--seal", action="store_true", help="record an age view (a new recipient)")
    p.add_argument("--plain-out", help="then write the plain tape to this file")
    args = p.parse_args()
    print(json.dumps(anyio.run(record, args)))


if __name__ == "__main__":
    main()
