"""Record a folder into a tape, play it to a .tar file with events, and list the result.

    python examples/record_and_play.py [FOLDER] [OUT.tar]
    python examples/record_and_play.py --self-test

FOLDER defaults to this ``examples/`` folder and OUT to ``<folder name>.tar`` in the current
directory. The index goes to a temporary file, so FOLDER is left untouched.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import anyio

import atartape


async def record_and_play(folder: Path, out: Path, index: Path) -> atartape.Tape:
    tape = await atartape.record(folder, index_path=index, overwrite=True)
    print(f"recorded {tape.name}: {tape.entry_count} entries, {tape.total_size} bytes")
    print(f"fingerprint {tape.fingerprint}")
    player = atartape.TapePlayer(tape)
    async with await anyio.open_file(out, "wb") as handle:
        async for event in player.play():
            if event.type == atartape.TarEventType.FILE_DATA:
                await handle.write(event.data)
            elif event.type == "file_end" and event.entry and event.entry.is_file:
                print(f"  {event.entry.arc_path}  md5={event.metadata.md5sum}")
            elif event.type == "tape_completed":
                print(f"wrote {out}")
    return tape


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path(__file__).parent)
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--self-test", action="store_true", help="run on this folder and check")
    args = parser.parse_args()
    folder: Path = args.folder
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or (Path(scratch) if args.self_test else Path.cwd()) / f"{folder.name}.tar"
        tape = anyio.run(record_and_play, folder, out, Path(scratch) / "index.db")
        with tarfile.open(out) as archive:
            names = archive.getnames()
        for name in names:
            print(name)
        if args.self_test:
            assert out.stat().st_size == tape.total_size
            assert f"{folder.name}/record_and_play.py" in names
    return 0


if __name__ == "__main__":
    sys.exit(main())
