"""What the HTTP tests of views share: a tree, an age key pair, the bytes of each view, and the
offsets where a view's structure changes (age header and chunks, zstd frames and seek table)."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import atartape
from atartape import views
from atartape.format import age, zstd_seekable
from tests.helpers import write

IDENTITY = age.X25519Identity.generate()
RECIPIENT = str(IDENTITY.recipient)
FRAME = "64KiB"  # small frames: many frame boundaries in a small tape
SEALED = ("zstd", "age", "zstd+age")  # the views a recording can be made with


def tree(root: Path, scale: int = 4) -> Path:
    """Files that compress well and not at all (about ``scale`` * 175 KB in all), an empty
    one, a folder, a symlink."""
    write(root / "a.txt", "hello\n" * 50)
    write(root / "random.bin", random.Random(17).randbytes(scale * 75_000))
    write(root / "text.txt", "the same line again\n" * (scale * 5_000))
    write(root / "sub" / "empty", b"")
    (root / "link").symlink_to("a.txt")
    return root


async def record(root: Path, index: Path, view: str) -> atartape.Tape:
    """A recording of ``root`` made with ``view`` (its index at ``index``)."""
    options: dict[str, object] = {}
    if "zstd" in view:
        options.update(compress="zstd", frame_size=FRAME)
    if "age" in view:
        options.update(seal=[RECIPIENT])
    return await atartape.record(root, index_path=index, overwrite=True, **options)  # type: ignore[arg-type]


async def full(player: atartape.TapePlayer) -> bytes:
    return b"".join([chunk async for chunk in player.chunks()])


def edges(view: str, data: bytes) -> list[int]:
    """Offsets where ``view``'s bytes change structure, and their neighbours."""
    size = len(data)
    found = {0, 1, size // 2, size - 1, size}
    if view.endswith("age"):
        header = age.header_length(data) or 0
        for k in range(size // age.SEALED_CHUNK_SIZE + 2):
            at = header + k * age.SEALED_CHUNK_SIZE
            found |= {at - 1, at, at + 1}
    if view.startswith("zstd"):
        compressed = data if view == "zstd" else b""
        if compressed:
            table = zstd_seekable.parse_seek_table(compressed, file_size=size)
            ends = itertools.accumulate(e.compressed_size for e in table.entries)
            for at in ends:  # frame boundaries; the last is where the seek table begins
                found |= {at - 1, at, at + 1}
        found |= {size - 9, size - 17, size - 30}  # inside the seek table and its footer
    return sorted(e for e in found if 0 <= e <= size)


def identity_file(folder: Path) -> Path:
    """The age identity file that opens the sealed views (for ``age -d -i``)."""
    path = folder / "identity.txt"
    path.write_text(f"# test identity\n{IDENTITY}\n")
    os.chmod(path, 0o600)
    return path


def suffix(view: str) -> str:
    return views.suffix(view)
