"""The one check of a source entry against its promise, shared by playing and verifying.

Synchronous: every function here touches the disk and runs in a worker thread. A difference is a
:class:`~atartape.TarIntegrityError` whose ``reason`` says what differed (``missing``, ``type``,
``size``, ``mtime``, ``content``, ``unreadable``); a play raises it, a verification lists it.

Every source is reached beneath one handle on its folder, without following a symlink in any
component of its path (see :mod:`atartape._engine.beneath`): a folder of the tape swapped for a
symlink leads nowhere, whichever byte a window starts at. Files are opened without blocking (a
FIFO swapped in for a file must not hang a worker), and checked with ``fstat`` on the open
descriptor, so what is read is what was checked. While a file is read, :func:`check_unchanged`
compares it again after each read: a rewrite in place changes its mtime (or its size, or its
ctime), and bytes read across such a change are never handed on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Iterable, Mapping
from typing import Literal, Protocol

from ..errors import SourceNotFoundError, TapeFormatError, TarIntegrityError
from ..format import paths
from ..format.folders import Selection, listing_digest
from .beneath import Beneath, NotBeneathError, UnsafePathError
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


def open_root(root: str, tape_name: str) -> Beneath:
    """The handle on ``root`` (made absolute), the source folder of the tape ``tape_name``.

    Raises :class:`SourceNotFoundError` unless ``root`` is a folder that can be opened.
    """
    try:
        return Beneath(os.path.abspath(root))
    except OSError:
        raise SourceNotFoundError(
            f"the source of tape {tape_name!r} is not at {root!r} "
            "(pass source_root= to use it from elsewhere)"
        ) from None


Where = tuple[Beneath, bytes]
"""Where a row's source lies: beneath this folder, at this relative path (``b""``: the folder)."""


class Sources(Protocol):
    """Where the sources of a play's rows lie; :meth:`close` gives up the folders' handles."""

    def where(self, row: Row) -> Where: ...

    def close(self) -> None: ...


class FolderSource:
    """The sources of a tape recorded from one folder: each row beneath ``root``, at its path
    relative to ``arc_root`` (or the one the index kept, see :func:`relative_source`). Owns
    ``root``: :meth:`close` closes it."""

    def __init__(self, root: Beneath, arc_root: str) -> None:
        self.root = root
        self._cut = len(paths.to_bytes(arc_root))
        self._closed = False

    def where(self, row: Row) -> Where:
        return self.root, relative_source(row, self._cut)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.root.close()


def _kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special"


class PlacedSources:
    """Sources each beneath a folder of its own: a folder added whole, or the folder that holds
    a file added alone. ``places`` maps a row's archive path to that folder (absolute) and the
    path beneath it; each folder is opened once per play, when first needed. :meth:`close`
    closes them."""

    def __init__(self, places: Mapping[bytes, tuple[str, bytes]]) -> None:
        self._places = places
        self._roots: dict[str, Beneath] = {}

    def where(self, row: Row) -> Where:
        """Raises the row's mismatch when its folder cannot be opened."""
        folder, rel = self._places[row.arc_path]
        root = self._roots.get(folder)
        if root is None:
            try:
                root = Beneath(folder)
            except OSError as exc:
                raise _missing_or_unreadable(row, exc) from None
            self._roots[folder] = root
        return root, rel

    def close(self) -> None:
        roots, self._roots = self._roots, {}
        for root in roots.values():
            root.close()


def _missing_or_unreadable(row: Row, exc: OSError) -> TarIntegrityError:
    recorded = _KIND_NAMES[row.kind]
    if isinstance(exc, NotBeneathError):
        return mismatch(
            row,
            "type",
            "a folder on its path is now a symlink, so it is not beneath the recorded folder "
            f"any more (it was recorded as {recorded}); nothing of it was read",
        )
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


def _unsafe(row: Row, where: Where, exc: UnsafePathError) -> TapeFormatError:
    return TapeFormatError(
        f"{row.path!r}: its source {paths.from_bytes(where[1])!r} is not a path beneath the "
        f"folder {where[0].root!r} ({exc}): the index is damaged or was edited"
    )


def open_file(where: Where, row: Row) -> tuple[int, os.stat_result]:
    """The file of ``row`` opened for reading and checked against the promise, with its status.

    Raises the mismatch (a :class:`TarIntegrityError`), or :class:`TapeFormatError` for a
    source path that could leave its folder, and leaves nothing open.
    """
    root, rel = where
    try:
        fd = root.open(rel, OPEN_FLAGS)
    except UnsafePathError as exc:
        raise _unsafe(row, where, exc) from None
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

    def check(self, where: Where, row: Row) -> None:
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

    def folder_path(self, rel_folder: str) -> str:
        """The path of the folder at ``rel_folder`` (as :meth:`counts` is given it)."""
        return os.path.join(self.root, rel_folder) if rel_folder else self.root

    def names(self, where: Where, row: Row) -> list[str]:
        """The names in the folder of ``row`` that count. Raises its mismatch if it cannot be
        listed (gone, or no longer beneath the folder)."""
        root, rel = where
        try:
            found = root.listdir(rel)
        except OSError as exc:
            raise _missing_or_unreadable(row, exc) from None
        rel_folder = self.rel_folder(row)
        folder = self.folder_path(rel_folder)
        return [name for name in map(os.fsdecode, found) if self.counts(folder, rel_folder, name)]

    def check(self, where: Where, row: Row) -> None:
        if row.listing is None:
            raise _folder_changed(row, None)
        if listing_digest(map(os.fsencode, self.names(where, row))) != row.listing:
            raise _folder_changed(row, "names were added, removed or renamed in it")


Folders = StrictFolders | ListedFolders


def relative_source(row: Row, arc_root_length: int) -> bytes:
    """The path of ``row``'s source inside the recorded folder (``b""`` for the folder itself):
    its own path, or the one the index kept when the header carries a shortened path."""
    if row.source is not None:
        return row.source
    return row.arc_path[arc_root_length + 1 :]


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


def check_entry(where: Where, row: Row, folders: Folders) -> None:
    """Check a source entry of any kind against ``row``; raise the first difference (or
    :class:`TapeFormatError` for a source path that could leave its folder).

    A file is opened (and closed), so a file that cannot be read is found here too; a folder
    whose mtime moved is checked by ``folders``; a symlink's target is read (never followed).
    """
    if row.kind == "file":
        fd, _ = open_file(where, row)
        os.close(fd)
        return
    root, rel = where
    try:
        with root.parent(rel) as (dir_fd, name):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            difference = _compare(row, st)
            if difference is not None:
                raise difference
            target = os.readlink(name, dir_fd=dir_fd) if row.kind == "symlink" else None
    except UnsafePathError as exc:
        raise _unsafe(row, where, exc) from None
    except OSError as exc:
        raise _missing_or_unreadable(row, exc) from None
    if target is None:
        if _mtime_moved(row, st):
            folders.check(where, row)
    else:
        if target != row.linkname:
            was, now = paths.from_bytes(row.linkname), paths.from_bytes(target)
            raise mismatch(row, "content", f"symlink target changed ({was!r} -> {now!r})")
