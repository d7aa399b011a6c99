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
from .errors import TarIntegrityError
from .format.header import EntryKind
from .format.units import parse_size
from .format.windows import Location

__all__ = ["FetchRange", "restore_file"]

FetchRange = Callable[[int, int, int], Awaitable["bytes | bytearray | memoryview"]]
"""``fetch_range(volume_index, start, end)``: the bytes ``[start, end)`` of that volume."""

DEFAULT_MAX_FETCH = 8 * 1024 * 1024


def _exists(dest: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "destination exists (pass overwrite=True)", dest)


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

    The file is written to a temporary name beside ``dest``, checked, then renamed into place:
    ``dest`` holds the whole, verified file or is left as it was. Checks: every fetch returns
    exactly the bytes asked for, the total is the recorded size, and the content matches the
    recorded digest when the tape was recorded with ``checksum=``.

    Raises :class:`TarIntegrityError` when a check fails (no file is left behind),
    :class:`FileExistsError` when ``dest`` exists and ``overwrite`` is false (checked before
    anything is fetched), :class:`ValueError` for an entry that is not a regular file or a
    location whose fragments do not add up to its size, and whatever ``fetch_range`` raises.
    """
    if location.kind is not EntryKind.FILE:
        raise ValueError(
            f"{location.arc_path!r} is a {location.kind.value}: only regular files are restored"
        )
    covered = sum(fragment.length for fragment in location.fragments)
    if covered != location.size:
        raise ValueError(
            f"the fragments of {location.arc_path!r} cover {covered} bytes, "
            f"its size is {location.size}"
        )
    step = parse_size(max_fetch, what="max_fetch")
    algorithm = location.checksum_algorithm if location.checksum else None
    target = await anyio.to_thread.run_sync(_target, os.fspath(dest), location.arc_path, overwrite)
    temp = await anyio.to_thread.run_sync(_open_beside, target)
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm else None
    try:
        for fragment in location.fragments:
            at = fragment.offset_in_volume
            while at < fragment.end_in_volume:
                stop = min(at + step, fragment.end_in_volume)
                data = await fetch_range(fragment.volume_index, at, stop)
                if len(data) != stop - at:
                    raise TarIntegrityError(
                        f"{location.arc_path!r}: fetch_range({fragment.volume_index}, {at}, "
                        f"{stop}) returned {len(data)} bytes, expected {stop - at}",
                        arc_path=location.arc_path,
                    )
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
