"""GNU tar as the reference reader: its listing of an archive, and atartape's, compared.

A differential test asks one question of both readers: which members does this archive hold
(name, type, and size for files)? atartape must give GNU tar's answer, or refuse the archive
with an :class:`ArchiveFormatError`: never a third answer (another listing, or a listing where
GNU tar gives up).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import anyio
import pytest

from atartape.archive import MemberType, open_archive
from atartape.errors import ArchiveFormatError
from tests.helpers import MemorySource

# What ``tar -tv`` shows in its first column, as atartape's member types.
_KINDS = {
    "-": MemberType.FILE,
    "C": MemberType.FILE,  # contiguous
    "d": MemberType.DIRECTORY,
    "l": MemberType.SYMLINK,
    "h": MemberType.HARDLINK,
    "c": MemberType.CHAR_DEVICE,
    "b": MemberType.BLOCK_DEVICE,
    "p": MemberType.FIFO,
}
_LINE = re.compile(
    r'^(?P<kind>\S)\S{9}\s+\S+\s+(?P<size>\S+)\s+[^"]*?\s"(?P<name>(?:[^"\\]|\\.)*)"'
)
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}

Entry = tuple[str, MemberType, int | None]  # name, type, size (files only)


# What GNU tar says when the archive ends before its blocks do: it has no listing to match
# then (atartape must refuse too: an archive ends where its blocks say).
_CUT = ("Unexpected EOF",)


@dataclass(frozen=True)
class Listing:
    """A reader's answer: the members it listed, and whether it read the archive to its end
    without an error (``ok``)."""

    ok: bool
    entries: tuple[Entry, ...]
    error: str = ""
    marker: bool = False  # atartape's: the members ended at a zero block


def gnu_tar() -> str:
    path = shutil.which("tar")
    if path is None:
        pytest.skip("GNU tar is not installed")
    version = subprocess.run([path, "--version"], capture_output=True, check=True).stdout
    if b"GNU tar" not in version:
        pytest.skip("tar is not GNU tar")
    return path


def _unquote(text: str) -> str:
    """A name in GNU tar's ``--quoting-style=c``, back to atartape's spelling (UTF-8 with
    ``surrogateescape``)."""
    out = bytearray()
    at = 0
    while at < len(text):
        char = text[at]
        if char != "\\":
            out.append(ord(char))  # a byte: the output is read as latin-1
            at += 1
            continue
        code = text[at + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            at += 2
        else:
            digits = re.match(r"[0-7]{1,3}", text[at + 1 :])
            assert digits is not None, text
            out.append(int(digits.group(), 8) & 0xFF)
            at += 1 + len(digits.group())
    return out.decode("utf-8", "surrogateescape")


def parse_listing(stdout: bytes) -> list[Entry]:
    entries: list[Entry] = []
    for line in stdout.decode("latin-1").splitlines():
        found = _LINE.match(line)
        assert found is not None, f"unexpected tar -tv line {line!r}"
        kind = _KINDS.get(found["kind"], MemberType.OTHER)
        name = _unquote(found["name"])
        name = name.rstrip("/") or name
        size = int(found["size"]) if kind is MemberType.FILE else None
        entries.append((name, kind, size))
    return entries


def _gnu_listing(tar: str, data: bytes) -> Listing:
    with tempfile.TemporaryDirectory(prefix="atartape-gnu-") as folder:
        path = os.path.join(folder, "archive.tar")
        with open(path, "wb") as out:
            out.write(data)
        run = subprocess.run(
            [tar, "--list", "--verbose", "--quoting-style=c", "--numeric-owner", "-f", path],
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
            timeout=30,
            check=False,
        )
    return Listing(
        run.returncode == 0,
        tuple(parse_listing(run.stdout)),
        run.stderr.decode("latin-1").strip(),
    )


async def gnu_listing(data: bytes) -> Listing:
    """What ``tar -tvf`` lists (in a worker thread: the event loop is not blocked)."""
    tar = gnu_tar()
    return await anyio.to_thread.run_sync(_gnu_listing, tar, data)


async def our_listing(data: bytes) -> Listing:
    entries: list[Entry] = []
    try:
        with anyio.fail_after(30):
            async with open_archive(MemorySource(data)) as archive:
                async for member in archive.members():
                    size = member.size if member.is_file else None
                    entries.append((member.name, member.type, size))
            marker = archive.possibly_truncated is False
    except ArchiveFormatError as exc:
        return Listing(False, tuple(entries), str(exc))
    return Listing(True, tuple(entries), marker=marker)


async def third_answer(data: bytes) -> str | None:
    """Why atartape's answer is neither GNU tar's nor a refusal; ``None`` when it is one of
    them. GNU tar's answer is its listing (whatever it warned about on the way: it may skip to
    the next header and find the same members), and "cut" when the archive ends early."""
    ours = await our_listing(data)
    if not ours.ok:
        return None  # refused: always an allowed answer
    gnu = await gnu_listing(data)
    # After a lone zero block GNU tar reads the next header to warn about it, and may run out
    # of bytes in its extension data: past the end, which is not a cut of the members.
    if not ours.marker and any(message in gnu.error for message in _CUT):
        return f"GNU tar finds the archive cut ({gnu.error!r}); atartape lists {ours.entries}"
    if ours.entries != gnu.entries:
        return f"atartape lists {ours.entries}, GNU tar {gnu.entries}"
    return None
