"""Contender: tartape (the synchronous library on PyPI), run from its own virtual environment.

``record`` writes a catalog of the folder; ``stream`` plays the recorded tape to /dev/null.
"""

from __future__ import annotations

import argparse
import json

import tartape


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("command", choices=["record", "stream"])
    p.add_argument("--source", required=True)
    p.add_argument("--catalog", required=True)
    args = p.parse_args()
    if args.command == "record":
        tape = tartape.record(args.source, catalog_path=args.catalog, overwrite=True)
        print(json.dumps({"total_size": tape.total_size, "file_count": tape.file_count}))
        return
    tape = tartape.open(args.source, catalog_path=args.catalog)
    written = 0
    with open("/dev/null", "wb") as out:
        for chunk in tape.play(start_offset=0):
            out.write(chunk)
            written += len(chunk)
    print(json.dumps({"bytes": written, "total_size": tape.total_size}))


if __name__ == "__main__":
    main()
