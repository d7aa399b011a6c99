"""Restore one file from a tape stored elsewhere, fetching only the bytes of that file.

:func:`restore_file` takes a :class:`~atartape.locate.Location` (from ``await tape.locate(...)``,
which needs only the index) and an async callable that returns byte ranges of the stored tape or
of its volumes: an S3 ranged GET, an HTTP ``Range`` request, a read of a local volume file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import anyio
import anyio.to_thread

from ._errors import TarIntegrityError
from .header import EntryKind
from .locate import Location
from .units import parse_size

__all__ = ["FetchRange", "restore_file"]

FetchRange = Callable[[int, int, int], Awaitable["bytes | bytearray | memoryview"]]
"""``fetch_range(volume_index, start, end)``: the bytes ``[start, end)`` of that volume."""

DEFAULT_MAX_FETCH = 8 * 1024 * 1024


class _TempFile:
    """The file being restored, beside its destination (synchronous: used in worker threads)."""

    def __init__(self, dest: str, algorithm: str | None) -> None:
        folder = os.path.dirname(dest) or "."
        os.makedirs(folder, exist_ok=True)
        fd, self.path = tempfile.mkstemp(
            prefix=f".{os.path.basename(dest)}.", suffix=".restoring", dir=folder
        )
        self.handle: IO[bytes] = os.fdopen(fd, "wb")
        self.digest = hashlib.new(algorithm) if algorithm else None
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.handle.write(data)
        if self.digest is not None:
            self.digest.update(data)
        self.written += len(data)

    def publish(self, dest: str, mode: int | None, mtime: int | None, overwrite: bool) -> None:
        """Flush to disk, set mode and mtime, and move into place in one step."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        if mode is not None:
            os.chmod(self.path, mode)
        if mtime is not None:
            os.utime(self.path, (mtime, mtime))
        if overwrite:
            os.replace(self.path, dest)
        else:
            try:
                os.link(self.path, dest)  # atomic, and fails if something appeared meanwhile
            except FileExistsError:
                raise _exists(dest) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(dest):  # no hard links here: check, then rename
                    raise _exists(dest) from None
                os.replace(self.path, dest)
            else:
                os.unlink(self.path)
        _fsync_folder(os.path.dirname(dest) or ".")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some systems cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _exists(dest: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "destination exists (pass overwrite=True)", dest)


def _target(dest: str, arc_path: str, overwrite: bool) -> str:
    """The file to write: ``dest`` itself, or the entry's name inside an existing folder."""
    if os.path.isdir(dest):
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
    whatever the file size. ``dest`` is the file to write, or an existing folder to write into
    under the entry's name; missing parent folders are created. With ``preserve`` the recorded
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
    temp = await anyio.to_thread.run_sync(_TempFile, target, algorithm)
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
                at = stop
        if temp.written != location.size:  # pragma: no cover - guaranteed by the checks above
            raise TarIntegrityError(
                f"{location.arc_path!r}: restored {temp.written} bytes, recorded {location.size}",
                arc_path=location.arc_path,
            )
        if temp.digest is not None and temp.digest.hexdigest() != location.checksum:
            raise TarIntegrityError(
                f"{location.arc_path!r}: restored content does not match the recorded "
                f"{algorithm} digest (recorded {location.checksum}, "
                f"restored {temp.digest.hexdigest()})",
                arc_path=location.arc_path,
            )
        await anyio.to_thread.run_sync(
            temp.publish,
            target,
            location.mode if preserve else None,
            location.mtime if preserve else None,
            overwrite,
        )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(temp.discard)
        raise
    return Path(target)
