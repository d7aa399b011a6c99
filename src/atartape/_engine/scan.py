"""Scanning a folder into tape entries (synchronous: it runs in a worker thread)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import PathConstraintError, SourceNotFoundError
from ..format import paths
from ..format.header import EntryKind
from ..format.layout import Entry, assign_offsets

INDEX_DIR = ".tartape"

Exclude = Iterable[str] | Callable[[str], bool] | None

_READ_SIZE = 1 << 20


@dataclass
class ScanResult:
    entries: list[Entry]
    total_size: int
    skipped: list[str] = field(default_factory=list)  # sockets, FIFOs, devices


def exclusion_test(exclude: Exclude) -> Callable[[str, str], bool]:
    """A test ``(relative_path, name) -> excluded`` from glob patterns or a predicate.

    A pattern matches an entry's name (``*.tmp``, ``.git``) or its whole path relative to the
    recorded folder (``logs/*.gz``). A callable receives the relative path.
    """
    if exclude is None:
        return lambda rel, name: False
    if callable(exclude):
        predicate = exclude
        return lambda rel, name: bool(predicate(rel))
    if isinstance(exclude, str):
        exclude = [exclude]
    patterns = [p.rstrip("/") for p in exclude]
    return lambda rel, name: any(
        fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(rel, p) for p in patterns
    )


def file_digest(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def scan(
    source_root: str,
    arc_root: str,
    *,
    exclude: Exclude = None,
    skip: frozenset[str] = frozenset(),
    checksum: str | None = None,
) -> ScanResult:
    """Scan ``source_root`` into sorted, laid-out entries whose paths start with ``arc_root``.

    Symlinks are stored, never followed; sockets, FIFOs and devices are skipped; absolute paths
    in ``skip`` (the index and its temporary files) are left out. Raises
    :class:`SourceNotFoundError` if the folder is missing and :class:`PathConstraintError`
    listing every path that cannot be stored.
    """
    try:
        root_stat = os.stat(source_root)
    except FileNotFoundError:
        raise SourceNotFoundError(f"source folder {source_root!r} does not exist") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise SourceNotFoundError(f"source {source_root!r} is not a folder")
    is_excluded = exclusion_test(exclude)
    skip = skip | {os.path.join(source_root, INDEX_DIR)}  # a tape's own metadata, never archived

    found: list[tuple[bytes, EntryKind, int, int, int, str, str | None]] = []
    skipped: list[str] = []
    violations: list[tuple[str, str]] = []

    def add(arc: str, kind: EntryKind, st: os.stat_result, link: str, digest: str | None) -> None:
        size = st.st_size if kind is EntryKind.FILE else 0
        reason = paths.violation(
            arc, is_dir=kind is EntryKind.DIRECTORY, linkname=link if link else None
        )
        if reason is not None:
            violations.append((arc, reason))
        mode = stat.S_IMODE(st.st_mode)
        found.append((paths.to_bytes(arc), kind, size, mode, st.st_mtime_ns, link, digest))

    add(arc_root, EntryKind.DIRECTORY, root_stat, "", None)
    pending = [(source_root, "")]
    while pending:
        folder, rel_folder = pending.pop()
        with os.scandir(folder) as listing:
            children = list(listing)
        for child in children:
            rel = paths.join(rel_folder, child.name)
            if child.path in skip or is_excluded(rel, child.name):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while scanning: it was never part of this moment
            arc = paths.join(arc_root, rel)
            if stat.S_ISDIR(st.st_mode):
                add(arc, EntryKind.DIRECTORY, st, "", None)
                pending.append((child.path, rel))
            elif stat.S_ISREG(st.st_mode):
                digest = file_digest(child.path, checksum) if checksum else None
                add(arc, EntryKind.FILE, st, "", digest)
            elif stat.S_ISLNK(st.st_mode):
                add(arc, EntryKind.SYMLINK, st, os.readlink(child.path), None)
            else:
                skipped.append(arc)

    if violations:
        raise PathConstraintError(sorted(violations, key=lambda v: paths.to_bytes(v[0])))
    found.sort(key=lambda item: paths.sort_key(item[0]))
    starts, total = assign_offsets(item[2] for item in found)
    entries = [
        Entry(
            arc_path=paths.from_bytes(raw),
            kind=kind,
            size=size,
            mode=mode,
            mtime=mtime_ns // 1_000_000_000,
            start_offset=start,
            linkname=link,
            mtime_ns=mtime_ns,
            checksum=digest,
        )
        for start, (raw, kind, size, mode, mtime_ns, link, digest) in zip(starts, found)
    ]
    return ScanResult(entries, total, skipped)
