"""Scanning a folder into tape entries (synchronous: it runs in a worker thread).

The folder is walked beneath one handle on it (see :mod:`atartape._engine.beneath`): each folder
is opened by its path beneath the handle, never through a symlink, and listed, stat-ed, hashed and
read (symlink targets) by name through its descriptor, so what is recorded lies in the folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import PathConstraintError, SourceNotFoundError, TarIntegrityError
from ..format import paths
from ..format.events import Progress
from ..format.header import EntryKind, Owner
from ..format.layout import Entry, assign_offsets
from .beneath import LIST_FLAGS, Beneath, NotBeneathError
from .source import OPEN_FLAGS, ListedFolders

_READ_SIZE = 1 << 20


@dataclass
class ScanResult:
    entries: list[Entry]
    total_size: int
    skipped: list[str] = field(default_factory=list)  # sockets, FIFOs, devices


def file_digest(dir_fd: int, name: str, algorithm: str, progress: Progress) -> str:
    """The digest of the file ``name`` in the folder ``dir_fd`` (a symlink there is refused)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    fd = os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO since it was stat-ed
            raise OSError(errno.EINVAL, "not a regular file any more", name)
        while chunk := handle.read(_READ_SIZE):
            digest.update(chunk)
            progress.bytes += len(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ScanOptions:
    """How a folder is scanned into entries (see :func:`atartape.record`).

    ``checksum`` names the digest to store per file; ``known`` gives the digests a previous
    recording stored (relative path -> size, nanosecond mtime, digest), reused for files that
    kept their size and mtime; ``owners`` keeps uid, gid and names (``anonymize=False``);
    ``auto_truncate`` shortens paths that do not fit a header, keeping the originals.
    """

    checksum: str | None = None
    known: Mapping[str, tuple[int, int, str]] = field(default_factory=dict)
    owners: bool = False
    auto_truncate: bool = False


_ALONE_SECONDS = 0.05  # a tree scanned faster than this is done in one thread
_SCAN_THREADS = 8


@dataclass
class _Folder:
    listing: str
    children: list[tuple[str, EntryKind, os.stat_result, str, str | None]] = field(
        default_factory=list
    )
    folders: list[tuple[str, str]] = field(default_factory=list)


def _scan_in_threads(
    pending: list[tuple[str, str]],
    folder_of: Callable[[str, str], _Folder],
    take: Callable[[str, _Folder], list[tuple[str, str]]],
) -> None:
    """Scan the ``pending`` folders and all below them, several at a time."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="atartape-scan") as pool:
        running: dict[Future[_Folder], str] = {
            pool.submit(folder_of, folder, rel): rel for folder, rel in pending
        }
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    rel_folder = running.pop(future)
                    for folder, rel in take(rel_folder, future.result()):
                        running[pool.submit(folder_of, folder, rel)] = rel
        finally:
            for future in running:
                future.cancel()


@dataclass
class _Found:
    arc: str  # the path in the header (shortened with auto_truncate)
    original: str  # the path it would have in a header with room for it
    rel: str  # the path in the recorded folder
    kind: EntryKind
    st: os.stat_result
    link: str
    digest: str | None
    owner: Owner | None


def scan(
    source_root: str,
    arc_root: str,
    folders: ListedFolders,
    options: ScanOptions | None = None,
    *,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan ``source_root`` into sorted, laid-out entries whose paths start with ``arc_root``.

    ``folders`` says which names count (see :class:`ListedFolders`): what it leaves out (the
    index, OS noise, pattern exclusions) and what its selection's predicate excludes is not
    archived; every folder's entry records the digest of the names that count. Symlinks are
    stored, never followed; sockets, FIFOs and devices are skipped. Raises
    :class:`SourceNotFoundError` if the folder is missing and :class:`PathConstraintError`
    listing every path that cannot be stored.
    """
    options = options if options is not None else ScanOptions()
    try:
        root_stat = os.stat(source_root)
    except FileNotFoundError:
        raise SourceNotFoundError(f"source folder {source_root!r} does not exist") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise SourceNotFoundError(f"source {source_root!r} is not a folder")
    predicate = folders.selection.predicate
    progress = progress if progress is not None else Progress()
    owner_of = _Owners() if options.owners else None

    found: list[_Found] = []
    skipped: list[str] = []
    listings: dict[str, str] = {}  # path in the folder -> the listing digest of that folder

    def add(rel: str, kind: EntryKind, st: os.stat_result, link: str, digest: str | None) -> None:
        arc = paths.join(arc_root, rel)
        owner = owner_of(st) if owner_of is not None else None
        found.append(_Found(arc, arc, rel, kind, st, link, digest, owner))
        progress.entries += 1

    def folder_of(folder: str, rel_folder: str) -> _Folder:
        """One folder: its listing, and its children stat-ed (and hashed); in any thread."""
        try:
            dir_fd = root.open(paths.to_bytes(rel_folder), LIST_FLAGS)
        except NotBeneathError:
            raise TarIntegrityError(
                f"{paths.join(arc_root, rel_folder)!r}: was swapped for a symlink while the "
                "folder was being recorded (a folder on its path is now a symlink)",
                arc_path=paths.join(arc_root, rel_folder),
                reason="type",
            ) from None
        try:
            return _listed(dir_fd, folder, rel_folder)
        finally:
            os.close(dir_fd)

    def _listed(dir_fd: int, folder: str, rel_folder: str) -> _Folder:
        with os.scandir(dir_fd) as listing:
            children = [c for c in listing if folders.counts(folder, rel_folder, c.name)]
        result = _Folder(folders.listing(folder, rel_folder, (c.name for c in children)))
        for child in children:
            rel = paths.join(rel_folder, child.name)
            if predicate is not None and predicate(rel):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while scanning: it was never part of this moment
            if stat.S_ISDIR(st.st_mode):
                result.children.append((rel, EntryKind.DIRECTORY, st, "", None))
                result.folders.append((os.path.join(folder, child.name), rel))
            elif stat.S_ISREG(st.st_mode):
                digest = None
                if options.checksum:
                    known = options.known.get(rel)
                    if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
                        digest = known[2]
                    else:
                        digest = file_digest(dir_fd, child.name, options.checksum, progress)
                result.children.append((rel, EntryKind.FILE, st, "", digest))
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(child.name, dir_fd=dir_fd)
                result.children.append((rel, EntryKind.SYMLINK, st, link, None))
            else:
                skipped.append(paths.join(arc_root, rel))
        return result

    def take(rel_folder: str, result: _Folder) -> list[tuple[str, str]]:
        listings[rel_folder] = result.listing
        for child in result.children:
            add(*child)
        return result.folders

    add("", EntryKind.DIRECTORY, root_stat, "", None)
    # The first folders are scanned here; a large or slow tree goes on in threads, which
    # overlap the disk's waits (a cold disk) and the hashing of files (hashlib frees the GIL).
    pending = [(source_root, "")]
    started = time.monotonic()
    root = Beneath(source_root)  # every folder below is opened beneath it, never through a link
    try:
        while pending and not (len(pending) > 1 and time.monotonic() - started > _ALONE_SECONDS):
            folder, rel_folder = pending.pop()
            pending.extend(take(rel_folder, folder_of(folder, rel_folder)))
        if pending:
            _scan_in_threads(pending, folder_of, take)
    finally:
        root.close()
    _fit_headers(found, options.auto_truncate)
    found.sort(key=lambda item: paths.sort_key(paths.to_bytes(item.arc)))
    starts, total = assign_offsets(
        item.st.st_size if item.kind is EntryKind.FILE else 0 for item in found
    )
    entries = []
    for start, item in zip(starts, found):
        is_file = item.kind is EntryKind.FILE
        mtime_ns = item.st.st_mtime_ns
        entries.append(
            Entry(
                arc_path=item.arc,
                kind=item.kind,
                size=item.st.st_size if is_file else 0,
                mode=stat.S_IMODE(item.st.st_mode),
                mtime=mtime_ns // 1_000_000_000,
                start_offset=start,
                linkname=item.link,
                mtime_ns=mtime_ns,
                checksum=item.digest,
                listing=listings.get(item.rel) if item.kind is EntryKind.DIRECTORY else None,
                source_path=item.rel if item.arc != item.original else None,
                owner=item.owner,
            )
        )
    return ScanResult(entries, total, skipped)


def _fit_headers(found: list[_Found], auto_truncate: bool) -> None:
    """Check every path fits a header; with ``auto_truncate``, shorten those that do not (and
    any shortened path that would collide with another entry's). Raises
    :class:`PathConstraintError` listing every path that cannot be stored."""
    violations: list[tuple[str, str]] = []
    shortened = []
    for item in found:
        raw = paths.to_bytes(item.arc)
        if len(raw) < paths.NAME_FIELD - 1 and len(item.link) < 25 and item.owner is None:
            continue  # the common case: fits the name field, nothing to split (no NUL in names)
        is_dir = item.kind is EntryKind.DIRECTORY
        link = item.link or None
        reason = paths.violation(item.arc, is_dir=is_dir, linkname=link)
        if (
            reason is not None
            and auto_truncate
            and paths.violation(item.arc, is_dir=is_dir) is not None
        ):
            try:
                short = paths.from_bytes(paths.shorten(paths.to_bytes(item.arc), is_dir=is_dir))
            except ValueError:
                short = None
            if short is not None and paths.violation(short, is_dir=is_dir, linkname=link) is None:
                item.arc = short
                shortened.append(item)
                continue
        if reason is None and item.owner is not None and item.owner.problem() is not None:
            reason = item.owner.problem()
        if reason is not None:
            violations.append((item.arc, reason))
    if violations:
        raise PathConstraintError(
            sorted(violations, key=lambda v: paths.to_bytes(v[0])), auto_truncate=auto_truncate
        )
    taken = {item.arc for item in found if item not in shortened}
    for item in shortened:
        attempt = 0
        while item.arc in taken:  # a real name like the shortened one, or two alike: rare
            attempt += 1
            raw = paths.to_bytes(item.original)
            is_dir = item.kind is EntryKind.DIRECTORY
            item.arc = paths.from_bytes(paths.shorten(raw, is_dir=is_dir, attempt=attempt))
        taken.add(item.arc)


class _Owners:
    """uid, gid and their names for stat results; names looked up once per id."""

    def __init__(self) -> None:
        self._users: dict[int, bytes] = {}
        self._groups: dict[int, bytes] = {}

    def __call__(self, st: os.stat_result) -> Owner:
        return Owner(st.st_uid, st.st_gid, self._user(st.st_uid), self._group(st.st_gid))

    def _user(self, uid: int) -> bytes:
        name = self._users.get(uid)
        if name is None:
            try:
                import pwd

                name = os.fsencode(pwd.getpwuid(uid).pw_name)
            except (ImportError, KeyError):
                name = b""
            self._users[uid] = name
        return name

    def _group(self, gid: int) -> bytes:
        name = self._groups.get(gid)
        if name is None:
            try:
                import grp

                name = os.fsencode(grp.getgrgid(gid).gr_name)
            except (ImportError, KeyError):
                name = b""
            self._groups[gid] = name
        return name
