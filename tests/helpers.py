"""Helpers the tests share: files to write, a range source in memory, a tape's bytes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio.lowlevel

import atartape


def write(path: Path, data: bytes | str = b"", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)
    return path


class MemorySource:
    """Bytes in memory as a range source that records every range it is asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.reads: list[tuple[int, int]] = []

    async def read_range(self, start: int, end: int) -> bytes:
        self.reads.append((start, end))
        await anyio.lowlevel.checkpoint()
        return self.data[start:end]

    @property
    def fetched(self) -> int:
        return sum(end - start for start, end in self.reads)


async def tape_bytes(root: Path, tmp_path: Path, **options: object) -> tuple[atartape.Tape, bytes]:
    index = tmp_path / f"{root.name}-{len(options)}.db"
    tape = await atartape.record(root, index_path=index, overwrite=True, **options)  # type: ignore[arg-type]
    player = atartape.TapePlayer(tape, source_root=root)
    return tape, b"".join([chunk async for chunk in player.stream()])


def tree(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """What a folder holds: relative path -> (kind, content or link target, permission bits)."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if path.is_symlink():
            found[rel] = ("symlink", os.readlink(path), 0)
        elif path.is_dir():
            found[rel] = ("dir", b"", st.st_mode & 0o777)
        else:
            found[rel] = ("file", path.read_bytes(), st.st_mode & 0o777)
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago (a server may still race for it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
