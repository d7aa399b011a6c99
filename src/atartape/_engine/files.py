"""Files written whole or not at all, and reads that return every byte asked for.

Synchronous: everything here touches the disk and runs in a worker thread. A file is written
under a temporary name beside its destination (same folder, same file system), flushed to disk,
and renamed into place, then the folder is flushed too: a reader sees the old file or the new one,
never part of it, even after a crash. Temporary names carry the writer's process id, so that a
later writer can remove the leftovers of one that was killed (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import secrets

_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_TEMP_SUFFIX = ".tmp"


_STEM_BYTES = 120  # a temporary name stays well within a file system's 255 bytes


def _stem(name: str) -> str:
    """What a temporary name starts from: ``name`` itself, or for a long one its start and a
    digest of the whole (so that it still names that file alone)."""
    if len(os.fsencode(name)) <= _STEM_BYTES:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    head = os.fsdecode(os.fsencode(name)[:60])  # a cut character stays as escaped bytes
    return f"{head}~{digest}"


def temp_name(final: str) -> str:
    """A fresh temporary name beside ``final``: ``.<name>.<pid>.<random>.tmp`` in its folder
    (a long name shortened, see :func:`_stem`)."""
    folder, name = os.path.split(final)
    stem = _stem(name)
    return os.path.join(folder, f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def remove_stale(final: str) -> list[str]:
    """Remove the temporary files beside ``final`` left by writers that no longer run.

    Returns the paths removed. Files of a running process (another writer of the same
    destination) are left alone.
    """
    folder, name = os.path.split(final)
    stem = _stem(name)
    removed = []
    pattern = os.path.join(glob.escape(folder), f".{glob.escape(stem)}.*{_TEMP_SUFFIX}*")
    for path in glob.glob(pattern):
        pid_text = path[len(os.path.join(folder, f".{stem}.")) :].split(".", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def fsync_folder(path: str) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it."""
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - some systems cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - nor flush them
        pass
    finally:
        os.close(fd)


def unlink_quietly(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _move(temp: str, final: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, final)
        return
    try:
        os.link(temp, final)  # atomic, and fails if something appeared meanwhile
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "destination exists", final) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(final):  # no hard links here: check, then rename
            raise FileExistsError(errno.EEXIST, "destination exists", final) from None
        os.replace(temp, final)
    else:
        os.unlink(temp)


def publish(temp: str, final: str, *, overwrite: bool = True) -> None:
    """Move the finished file ``temp`` to ``final`` in one step, flushing both to disk.

    Without ``overwrite`` the move fails with :class:`FileExistsError` if ``final`` exists,
    checked atomically where the file system has hard links.
    """
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    _move(temp, final, overwrite)
    fsync_folder(os.path.dirname(final))


class AtomicFile:
    """A file being written under a temporary name beside ``final``; nothing is at ``final``
    until :meth:`publish`. Never follows a symlink at the temporary name."""

    def __init__(self, final: str, *, mode: int = 0o600) -> None:
        self.final = final
        self.temp = temp_name(final)
        self.fd = os.open(self.temp, _CREATE_FLAGS, mode)
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]
            self.written += done

    def publish(
        self,
        *,
        mode: int | None = None,
        mtime: float | None = None,
        overwrite: bool = True,
        durable: bool = True,
    ) -> str:
        """Set ``mode`` and ``mtime``, then move the file into place; returns ``final``.

        ``durable`` flushes the file and its folder to disk first. Raises
        :class:`FileExistsError` when ``final`` exists and ``overwrite`` is false.
        """
        fd, self.fd = self.fd, -1
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if mtime is not None:
            with contextlib.suppress(OverflowError, ValueError):
                os.utime(self.temp, (mtime, mtime))
        _move(self.temp, self.final, overwrite)
        if durable:
            fsync_folder(os.path.dirname(self.final))
        return self.final

    def discard(self) -> None:
        """Close and delete the temporary file (after an error or a cancellation)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        unlink_quietly(self.temp)


def write_atomically(final: str, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``final`` with ``data`` in one step, durably."""
    part = AtomicFile(final, mode=mode)
    try:
        part.write(data)
        part.publish()
    except BaseException:
        part.discard()
        raise


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``; fewer only at the end of the file (short reads retried)."""
    data = os.pread(fd, size, offset)
    if len(data) >= size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
