"""The one check of a source entry against its promise, shared by playing and verifying.

Synchronous: every function here touches the disk and runs in a worker thread. A difference is a
:class:`~atartape.TarIntegrityError` whose ``reason`` says what differed (``missing``, ``type``,
``size``, ``mtime``, ``content``, ``unreadable``); a play raises it, a verification lists it.

Files are opened without following symlinks and without blocking (a FIFO swapped in for a file
must not hang a worker), and checked with ``fstat`` on the open descriptor, so what is read is
what was checked. While a file is read, :func:`check_unchanged` compares it again after each read:
a rewrite in place changes its mtime (or its size, or its ctime), and bytes read across such a
change are never handed on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection
from typing import Literal

from ..errors import SourceNotFoundError, TarIntegrityError
from ..format import paths
from .index import Row

Reason = Literal["missing", "type", "size", "mtime", "content", "unreadable"]

OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
)
_KIND_NAMES = {"file": "a file", "dir": "a folder", "symlink": "a symlink"}


def mismatch(row: Row, reason: Reason, what: str) -> TarIntegrityError:
    """The error saying that ``row``'s source differs from its promise: ``what`` differed."""
    arc_path = row.path
    return TarIntegrityError(f"{arc_path!r}: {what}", arc_path=arc_path, reason=reason)


def require_folder(root: str, tape_name: str) -> None:
    """Raise :class:`SourceNotFoundError` unless ``root`` is a folder (the source of a tape)."""
    if not os.path.isdir(root):
        raise SourceNotFoundError(
            f"the source of tape {tape_name!r} is not at {root!r} "
            "(pass source_root= to use it from elsewhere)"
        )


def _kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


def _missing_or_unreadable(row: Row, exc: OSError) -> TarIntegrityError:
    recorded = _KIND_NAMES[row.kind]
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):  # ENOTDIR: a folder above it is now a file
        return mismatch(row, "missing", f"missing (it was recorded as {recorded})")
    if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
        return mismatch(row, "type", f"is now a symlink (it was recorded as {recorded})")
    return mismatch(row, "unreadable", f"cannot be read ({exc.strerror})")


def _compare(row: Row, st: os.stat_result) -> TarIntegrityError | None:
    """The difference between a file's status and its row's promise, if any."""
    found = _kind_of(st.st_mode)
    if found != row.kind:
        now = _KIND_NAMES.get(found, "a special file")
        return mismatch(row, "type", f"is now {now} (it was recorded as {_KIND_NAMES[row.kind]})")
    if row.kind == "file" and st.st_size != row.size:
        return mismatch(
            row,
            "size",
            f"size changed since recording (recorded {row.size} bytes, now {st.st_size})",
        )
    if row.kind == "file" and st.st_mtime_ns != row.mtime_ns:
        return mismatch(
            row,
            "mtime",
            f"mtime changed since recording (recorded {row.mtime_ns} ns, now {st.st_mtime_ns})",
        )
    return None


def open_file(path: bytes, row: Row) -> tuple[int, os.stat_result]:
    """The file of ``row`` opened for reading and checked against the promise, with its status.

    Raises the mismatch (a :class:`TarIntegrityError`) and leaves nothing open.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        raise _missing_or_unreadable(row, exc) from None
    try:
        st = os.fstat(fd)
        difference = _compare(row, st)
        if difference is not None:
            raise difference
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_unchanged(fd: int, row: Row, opened: os.stat_result) -> None:
    """After a read: the open file still has the size, mtime and ctime it had when opened.

    A write changes the mtime (and the ctime, which a forged mtime cannot put back), so bytes
    read before this check returns were read while the file held its promise.
    """
    st = os.fstat(fd)
    if st.st_size != opened.st_size:
        grew = "grew" if st.st_size > opened.st_size else "shrank"
        raise mismatch(
            row, "size", f"{grew} while being read (recorded {row.size} bytes, now {st.st_size})"
        )
    if st.st_mtime_ns != opened.st_mtime_ns or st.st_ctime_ns != opened.st_ctime_ns:
        raise mismatch(
            row,
            "mtime",
            "was rewritten while being read (its mtime or ctime moved: recorded mtime "
            f"{row.mtime_ns} ns, now {st.st_mtime_ns})",
        )


def check_entry(path: bytes, row: Row, unchecked_folders: Collection[bytes] = ()) -> None:
    """Check a source entry of any kind against ``row``; raise the first difference.

    A file is opened (and closed), so a file that cannot be read is found here too; a folder's
    mtime says whether names were added to it or removed (except the folders in
    ``unchecked_folders``: the roots, which hold the index); a symlink's target is read.
    """
    if row.kind == "file":
        fd, _ = open_file(path, row)
        os.close(fd)
        return
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise _missing_or_unreadable(row, exc) from None
    difference = _compare(row, st)
    if difference is not None:
        raise difference
    if row.kind == "dir":
        if st.st_mtime_ns != row.mtime_ns and row.arc_path not in unchecked_folders:
            raise mismatch(
                row,
                "mtime",
                "folder changed since recording: names were added, removed or renamed in it "
                f"(mtime recorded {row.mtime_ns} ns, now {st.st_mtime_ns})",
            )
    else:
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise _missing_or_unreadable(row, exc) from None
        if target != row.linkname:
            was, now = paths.from_bytes(row.linkname), paths.from_bytes(target)
            raise mismatch(row, "content", f"symlink target changed ({was!r} -> {now!r})")
