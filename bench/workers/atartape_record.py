"""Contender: record a folder into an atartape index (``atartape.record``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

import atartape


async def record(source: str, index: str) -> dict[str, Any]:
    tape = await atartape.record(source, index_path=index, overwrite=True)
    return {
        "total_size": tape.total_size,
        "file_count": tape.file_count,
        "fingerprint": tape.fingerprint,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True)
    p.add_argument("--index", required=True)
    args = p.parse_args()
    print(json.dumps(anyio.run(record, args.source, args.index)))


if __name__ == "__main__":
    main()
