"""Scanning a folder into tape entries (synchronous: it runs in a worker thread)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field

from ..errors import PathConstraintError, SourceNotFoundError
from ..format import paths
from ..format.events import Progress
from ..format.header import EntryKind
from ..format.layout import Entry, assign_offsets
from .source import ListedFolders

_READ_SIZE = 1 << 20


@dataclass
class ScanResult:
    entries: list[Entry]
    total_size: int
    skipped: list[str] = field(default_factory=list)  # sockets, FIFOs, devices


def file_digest(path: str, algorithm: str, progress: Progress) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            digest.update(chunk)
            progress.bytes += len(chunk)
    return digest.hexdigest()


def scan(
    source_root: str,
    arc_root: str,
    folders: ListedFolders,
    *,
    checksum: str | None = None,
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
    try:
        root_stat = os.stat(source_root)
    except FileNotFoundError:
        raise SourceNotFoundError(f"source folder {source_root!r} does not exist") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise SourceNotFoundError(f"source {source_root!r} is not a folder")
    predicate = folders.selection.predicate
    progress = progress if progress is not None else Progress()

    found: list[tuple[bytes, EntryKind, int, int, int, str, str | None]] = []
    skipped: list[str] = []
    violations: list[tuple[str, str]] = []
    listings: dict[str, str] = {}  # arc path of a folder -> its listing digest

    def add(arc: str, kind: EntryKind, st: os.stat_result, link: str, digest: str | None) -> None:
        size = st.st_size if kind is EntryKind.FILE else 0
        reason = paths.violation(
            arc, is_dir=kind is EntryKind.DIRECTORY, linkname=link if link else None
        )
        if reason is not None:
            violations.append((arc, reason))
        mode = stat.S_IMODE(st.st_mode)
        found.append((paths.to_bytes(arc), kind, size, mode, st.st_mtime_ns, link, digest))
        progress.entries += 1

    add(arc_root, EntryKind.DIRECTORY, root_stat, "", None)
    pending = [(source_root, "", arc_root)]
    while pending:
        folder, rel_folder, arc_folder = pending.pop()
        with os.scandir(folder) as listing:
            children = [c for c in listing if folders.counts(folder, rel_folder, c.name)]
        listings[arc_folder] = folders.listing(folder, rel_folder, (c.name for c in children))
        for child in children:
            rel = paths.join(rel_folder, child.name)
            if predicate is not None and predicate(rel):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while scanning: it was never part of this moment
            arc = paths.join(arc_root, rel)
            if stat.S_ISDIR(st.st_mode):
                add(arc, EntryKind.DIRECTORY, st, "", None)
                pending.append((child.path, rel, arc))
            elif stat.S_ISREG(st.st_mode):
                digest = file_digest(child.path, checksum, progress) if checksum else None
                add(arc, EntryKind.FILE, st, "", digest)
            elif stat.S_ISLNK(st.st_mode):
                add(arc, EntryKind.SYMLINK, st, os.readlink(child.path), None)
            else:
                skipped.append(arc)

    if violations:
        raise PathConstraintError(sorted(violations, key=lambda v: paths.to_bytes(v[0])))
    found.sort(key=lambda item: paths.sort_key(item[0]))
    starts, total = assign_offsets(item[2] for item in found)
    entries = []
    for start, (raw, kind, size, mode, mtime_ns, link, digest) in zip(starts, found):
        arc = paths.from_bytes(raw)
        entries.append(
            Entry(
                arc_path=arc,
                kind=kind,
                size=size,
                mode=mode,
                mtime=mtime_ns // 1_000_000_000,
                start_offset=start,
                linkname=link,
                mtime_ns=mtime_ns,
                checksum=digest,
                listing=listings.get(arc) if kind is EntryKind.DIRECTORY else None,
            )
        )
    return ScanResult(entries, total, skipped)
