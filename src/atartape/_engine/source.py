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
from collections.abc import Callable, Collection, Iterable
from typing import Literal

from ..errors import SourceNotFoundError, TarIntegrityError
from ..format import paths
from ..format.folders import Selection, listing_digest
from .index import Index, Row

INDEX_DIR = ".tartape"
"""The folder, in the recorded folder, that holds its tape's index: never archived."""

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


def _mtime_moved(row: Row, st: os.stat_result) -> bool:
    """Whether the source's mtime differs from the promise: to the nanosecond, or, for the rows
    of a tartape 3 catalog, to the second as tartape took it (``int(st_mtime)``)."""
    if row.whole_second_mtime:
        return int(st.st_mtime) != row.mtime
    return st.st_mtime_ns != row.mtime_ns


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
    if row.kind == "file" and _mtime_moved(row, st):
        if row.whole_second_mtime:
            what = f"recorded {row.mtime} s, now {int(st.st_mtime)}"
        else:
            what = f"recorded {row.mtime_ns} ns, now {st.st_mtime_ns}"
        return mismatch(row, "mtime", f"mtime changed since recording ({what})")
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


class StrictFolders:
    """A folder holds its promise while its mtime is the recorded one (``exempt`` folders, the
    roots of a one-shot tape or of an index of version 1, always do)."""

    def __init__(self, exempt: Collection[bytes] = ()) -> None:
        self.exempt = frozenset(exempt)

    def check(self, path: bytes, row: Row) -> None:
        if row.arc_path not in self.exempt:
            raise _folder_changed(row, None)


class ListedFolders:
    """A folder holds its promise while it holds the names it held when it was recorded, less
    the OS noise and the excluded names (see :mod:`atartape.format.folders`); looked at only
    when its mtime has moved.

    ``root`` is the recorded folder and ``arc_root`` its archive path; ``index_path`` the
    tape's index, whose own files never count (``.tartape`` in the root, or the index file and
    its temporary files wherever it lies). Both paths are absolute.
    """

    def __init__(
        self, root: str, arc_root: str, selection: Selection, index_path: str | None
    ) -> None:
        self.root = root
        self.arc_root = paths.to_bytes(arc_root)
        self.selection = selection
        self._index_folder, self._index_name = os.path.split(index_path) if index_path else ("", "")

    def counts(self, folder: str, rel_folder: str, name: str) -> bool:
        """Whether ``name`` in ``folder`` (at ``rel_folder`` in the tape) is in its listing."""
        if not rel_folder and name == INDEX_DIR:
            return False
        if (
            self._index_name
            and folder == self._index_folder
            and _is_index_file(name, self._index_name)
        ):
            return False
        return self.selection.listed(rel_folder, name)

    def listing(self, folder: str, rel_folder: str, names: Iterable[str]) -> str:
        """The listing digest of ``names`` found in ``folder``."""
        return listing_digest(
            os.fsencode(name) for name in names if self.counts(folder, rel_folder, name)
        )

    def rel_folder(self, row: Row) -> str:
        return paths.from_bytes(relative_source(row, len(self.arc_root)))

    def check(self, path: bytes, row: Row) -> None:
        if row.listing is None:
            raise _folder_changed(row, None)
        folder = os.fsdecode(path)
        try:
            names = os.listdir(folder)
        except OSError as exc:
            raise _missing_or_unreadable(row, exc) from None
        if self.listing(folder, self.rel_folder(row), names) != row.listing:
            raise _folder_changed(row, "names were added, removed or renamed in it")


Folders = StrictFolders | ListedFolders


def relative_source(row: Row, arc_root_length: int) -> bytes:
    """The path of ``row``'s source inside the recorded folder (``b""`` for the folder itself):
    its own path, or the one the index kept when the header carries a shortened path."""
    if row.source is not None:
        return row.source
    return row.arc_path[arc_root_length + 1 :]


def source_locator(root: str, arc_root: str) -> Callable[[Row], bytes]:
    """Where the source of each row lies, for a tape recorded from ``root`` (absolute)."""
    raw_root = os.fsencode(root)
    cut = len(paths.to_bytes(arc_root))

    def locate(row: Row) -> bytes:
        relative = relative_source(row, cut)
        return raw_root + b"/" + relative if relative else raw_root

    return locate


def folders_for(index: Index, root: str) -> Folders:
    """How the folders of the tape ``index`` describes are checked when played from ``root``."""
    meta = index.meta
    arc_root = meta["arc_root"]
    if index.version < 2:
        return StrictFolders({paths.to_bytes(arc_root)})
    selection = Selection(patterns=meta.get("exclude") or (), noise=meta.get("noise") or ())
    return ListedFolders(root, arc_root, selection, index.where)


def _is_index_file(name: str, index_name: str) -> bool:
    return name in (index_name, f"{index_name}-journal", f"{index_name}.key") or (
        name.startswith(f".{index_name}.") and ".tmp" in name
    )


def _folder_changed(row: Row, what: str | None) -> TarIntegrityError:
    return mismatch(
        row,
        "mtime",
        f"folder changed since recording: {what or 'names were added, removed or renamed in it'}"
        f" (its mtime was {row.mtime_ns} ns)",
    )


def check_entry(path: bytes, row: Row, folders: Folders) -> None:
    """Check a source entry of any kind against ``row``; raise the first difference.

    A file is opened (and closed), so a file that cannot be read is found here too; a folder
    whose mtime moved is checked by ``folders``; a symlink's target is read.
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
        if _mtime_moved(row, st):
            folders.check(path, row)
    else:
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise _missing_or_unreadable(row, exc) from None
        if target != row.linkname:
            was, now = paths.from_bytes(row.linkname), paths.from_bytes(target)
            raise mismatch(row, "content", f"symlink target changed ({was!r} -> {now!r})")
