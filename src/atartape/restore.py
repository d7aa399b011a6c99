"""Restore one file from a tape stored elsewhere, fetching only the bytes of that file.

:func:`restore_file` takes a :class:`~atartape.locate.Location` (from ``await tape.locate(...)``,
which needs only the index) and an async callable that returns byte ranges of the stored tape or
of its volumes: an S3 ranged GET, an HTTP ``Range`` request, a read of a local volume file.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread

from ._engine.files import AtomicFile
from .errors import InvalidArgumentError, TarIntegrityError
from .format.header import EntryKind
from .format.units import parse_size
from .format.windows import Location

__all__ = ["FetchRange", "restore_file"]

FetchRange = Callable[[int, int, int], Awaitable["bytes | bytearray | memoryview"]]
"""``fetch_range(volume_index, start, end)``: the bytes ``[start, end)`` of that volume."""

DEFAULT_MAX_FETCH = 8 * 1024 * 1024


def _exists(dest: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "destination exists (pass overwrite=True)", dest)


async def _fetch(
    location: Location, fetch_range: FetchRange, volume: int, start: int, end: int
) -> bytes | bytearray | memoryview:
    data = await fetch_range(volume, start, end)
    if len(data) != end - start:
        raise TarIntegrityError(
            f"{location.arc_path!r}: fetch_range({volume}, {start}, {end}) returned "
            f"{len(data)} bytes, expected {end - start}",
            arc_path=location.arc_path,
            reason="size",
        )
    return data


def _check_proof(location: Location, start: int, expected: bytes, found: bytes) -> None:
    if found != expected:
        pieces = location.fragments_of(start, len(expected))
        where = ", ".join(f"volume {f.volume_index} at {f.offset_in_volume}" for f in pieces)
        what = "its header" if start == location.start_offset else "the bytes after it"
        raise TarIntegrityError(
            f"{location.arc_path!r}: the fetched bytes are not this tape's ({what}, {where}, "
            "differ); is the volume size the one the parts were cut with, and the object "
            "the right one? Nothing was written",
            arc_path=location.arc_path,
            reason="content",
        )


def _leading_proof(location: Location, proofs: list[tuple[int, bytes]], step: int) -> bytes:
    """The header proof, when it lies just before the content in the same volume: it is then
    fetched with the content's first piece (one request less) and checked before any write."""
    if (
        not proofs
        or not location.fragments
        or proofs[0][0] != location.start_offset
        or step < 2 * len(proofs[0][1])
    ):
        return b""
    first = location.fragments[0]
    pieces = location.fragments_of(location.start_offset, len(proofs[0][1]))
    if (
        len(pieces) == 1
        and pieces[0].volume_index == first.volume_index
        and pieces[0].end_in_volume == first.offset_in_volume
    ):
        return proofs.pop(0)[1]
    return b""


async def _prove(
    location: Location, fetch_range: FetchRange, proofs: list[tuple[int, bytes]]
) -> None:
    """Fetch the bytes that prove the location (see :meth:`Location.proofs`) and compare."""
    for start, expected in proofs:
        found = b"".join(
            [
                bytes(
                    await _fetch(
                        location, fetch_range, f.volume_index, f.offset_in_volume, f.end_in_volume
                    )
                )
                for f in location.fragments_of(start, len(expected))
            ]
        )
        _check_proof(location, start, expected, found)


def _open_beside(target: str) -> AtomicFile:
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    return AtomicFile(target, mode=0o600)


def _target(dest: str, arc_path: str, overwrite: bool) -> str:
    """The file to write: ``dest`` itself, or the entry's name inside a folder (one that
    exists, or one written with a trailing slash, which is created)."""
    if dest.endswith(("/", os.sep)) or os.path.isdir(dest):
        dest = os.path.join(dest, arc_path.rsplit("/", 1)[-1])
    dest = os.path.abspath(dest)
    if not overwrite and os.path.lexists(dest):
        raise _exists(dest)
    return dest


async def restore_file(
    location: Location,
    fetch_range: FetchRange,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_fetch: int | str = DEFAULT_MAX_FETCH,
    preserve: bool = True,
) -> Path:
    """Rebuild the file at ``location`` from its fragments and return the path written.

    ``fetch_range(volume_index, start, end)`` must return the bytes ``[start, end)`` of that
    volume (of the whole tape, index 0, for a location made without a volume size). Each
    fragment is asked for in pieces of at most ``max_fetch`` bytes, so memory stays bounded
    whatever the file size. ``dest`` is the file to write, or a folder to write into under the
    entry's name (an existing one, or ``"restored/"`` with a trailing slash); missing folders
    are created. With ``preserve`` the recorded
    permission bits and mtime are applied.

    First the bytes that prove the location are fetched: the entry's own 512-byte header (from
    the previous volume too, when it straddles a boundary), and when the content reaches past
    the first volume the bytes just after it; a wrong volume size or the wrong object fails
    here, before anything is written. The file is
    then written to a temporary name beside ``dest``, checked, and renamed into place: ``dest``
    holds the whole, verified file or is left as it was. Checks: every fetch returns exactly the
    bytes asked for, the total is the recorded size, and the content matches the recorded
    digest when the tape was recorded with ``checksum=``.

    Raises :class:`TarIntegrityError` when a check fails (no file is left behind),
    :class:`FileExistsError` when ``dest`` exists and ``overwrite`` is false (checked before
    anything is fetched), :class:`ValueError` for an entry that is not a regular file or a
    location whose fragments do not add up to its size, and whatever ``fetch_range`` raises.
    """
    if location.kind is not EntryKind.FILE:
        raise InvalidArgumentError(
            f"{location.arc_path!r} is a {location.kind.value}: only regular files are restored"
        )
    covered = sum(fragment.length for fragment in location.fragments)
    if covered != location.size:
        raise InvalidArgumentError(
            f"the fragments of {location.arc_path!r} cover {covered} bytes, "
            f"its size is {location.size}"
        )
    step = parse_size(max_fetch, what="max_fetch")
    algorithm = location.checksum_algorithm if location.checksum else None
    target = await anyio.to_thread.run_sync(_target, os.fspath(dest), location.arc_path, overwrite)
    proofs = location.proofs()
    lead = _leading_proof(location, proofs, step)
    await _prove(location, fetch_range, proofs)
    temp = await anyio.to_thread.run_sync(_open_beside, target)
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm else None
    try:
        for fragment in location.fragments:
            at = fragment.offset_in_volume
            while at < fragment.end_in_volume:
                stop = min(at + step - len(lead), fragment.end_in_volume)
                data = await _fetch(
                    location, fetch_range, fragment.volume_index, at - len(lead), stop
                )
                if lead:
                    _check_proof(location, location.start_offset, lead, bytes(data[: len(lead)]))
                    data, lead = data[len(lead) :], b""
                await anyio.to_thread.run_sync(temp.write, data)
                if digest is not None:
                    digest.update(data)
                at = stop
        if temp.written != location.size:  # pragma: no cover - guaranteed by the checks above
            raise TarIntegrityError(
                f"{location.arc_path!r}: restored {temp.written} bytes, recorded {location.size}",
                arc_path=location.arc_path,
            )
        if digest is not None and digest.hexdigest() != location.checksum:
            raise TarIntegrityError(
                f"{location.arc_path!r}: restored content does not match the recorded "
                f"{algorithm} digest (recorded {location.checksum}, "
                f"restored {digest.hexdigest()})",
                arc_path=location.arc_path,
                reason="content",
            )
        mode = location.mode if preserve else None
        mtime = location.mtime if preserve else None
        try:
            await anyio.to_thread.run_sync(
                lambda: temp.publish(mode=mode, mtime=mtime, overwrite=overwrite)
            )
        except FileExistsError:
            raise _exists(target) from None
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(temp.discard)
        raise
    return Path(target)
