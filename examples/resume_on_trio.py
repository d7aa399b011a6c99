"""A transfer that fails half-way and resumes at the exact byte, on trio.

    python examples/resume_on_trio.py [FOLDER]
    python examples/resume_on_trio.py --self-test

The "upload" is a file that receives the stream; it fails once after half of the bytes. The
retry asks the receiver how many bytes it holds and plays the tape from there: the result is
byte-identical to one uninterrupted play.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import trio

import atartape


class FlakyUpload:
    """Appends what it is sent to a file, and breaks once after ``fail_after`` bytes."""

    def __init__(self, path: Path, fail_after: int) -> None:
        self.path = path
        self.fail_after = fail_after

    async def received(self) -> int:
        path = trio.Path(self.path)
        return (await path.stat()).st_size if await path.exists() else 0

    async def send(self, chunks: object) -> None:
        async with await trio.open_file(self.path, "ab") as handle:
            async for chunk in chunks:  # type: ignore[attr-defined]
                if self.fail_after and await handle.tell() + len(chunk) > self.fail_after:
                    self.fail_after = 0
                    raise ConnectionError("connection reset (simulated)")
                await handle.write(chunk)


async def transfer(folder: Path, scratch: Path) -> bool:
    tape = await atartape.record(folder, index_path=scratch / "index.db", overwrite=True)
    player = atartape.TapePlayer(tape, chunk_size=4096)  # small pieces, to fail mid-way
    upload = FlakyUpload(scratch / "upload.tar", fail_after=tape.total_size // 2)
    while True:
        offset = await upload.received()
        print(f"sending from byte {offset} of {tape.total_size}")
        try:
            await upload.send(player.chunks(start_offset=offset))
            break
        except ConnectionError as exc:
            print(f"  failed: {exc}")
    whole = hashlib.sha256()
    async for chunk in player.chunks():
        whole.update(chunk)
    sent = hashlib.sha256(await trio.Path(upload.path).read_bytes()).hexdigest()
    print("identical to one uninterrupted play:", sent == whole.hexdigest())
    return sent == whole.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path(__file__).parent)
    parser.add_argument("--self-test", action="store_true", help="exit 1 unless the bytes match")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        ok = trio.run(transfer, args.folder, Path(scratch))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
