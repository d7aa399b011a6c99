"""Recording: scan a folder once and write its tape index, atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from ._engine import files, index
from ._engine.scan import ScanOptions, scan
from ._engine.source import ListedFolders, relative_source
from .errors import (
    InvalidArgumentError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TarTapeError,
)
from .format import age, paths, zstd_seekable
from .format.embedded import index_member
from .format.events import Progress
from .format.folders import DEFAULT_NOISE, Exclude, Selection
from .format.header import FOOTER_SIZE, EntryKind
from .format.layout import Entry, fingerprint, identity
from .player import TapePlayer
from .tape import Tape, default_index_path
from .transforms import ViewOptions, key_file_bytes, read_keys, record_views
from .views import DEFAULT_FRAME_SIZE, key_path

__all__ = ["TapeRecorder", "record"]

CHECKSUMS = ("md5", "sha1", "sha256", "sha512")


async def record(
    source: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | None = None,
    exclude: Exclude = None,
    noise: Sequence[str] = DEFAULT_NOISE,
    overwrite: bool = False,
    arcname: str | None = None,
    checksum: str | bool | None = None,
    anonymize: bool = True,
    auto_truncate: bool = False,
    embed_index: bool = False,
    compress: str | None = None,
    level: int = zstd_seekable.DEFAULT_LEVEL,
    frame_size: int | str = DEFAULT_FRAME_SIZE,
    seal: Sequence[str] = (),
    passphrase: str | bytes | None = None,
    work_factor: int = age.DEFAULT_WORK_FACTOR,
    progress: Progress | None = None,
) -> Tape:
    """Record the folder ``source`` into a tape and return it, ready to play.

    ``index_path`` defaults to ``<source>/.tartape/index.db``; the index folder itself is never
    archived. ``exclude`` takes glob patterns matched against names and relative paths
    (``["*.tmp", "logs/*.gz"]``), or a predicate on the relative path. ``noise`` names the
    files operating systems drop into folders on their own (``.DS_Store``, ``Thumbs.db``,
    ``desktop.ini``, ``._*``): they are left out, and one that appears after recording does not
    stop the tape from playing; ``noise=()`` records them like any file. ``arcname`` replaces
    the folder's name as the first component of every archive path.

    ``checksum`` (``"md5"``, ``"sha1"``, ``"sha256"``, ``"sha512"``, or ``True`` for
    ``"sha256"``) stores a digest of every file, read at record time; re-recording over an
    index made with the same algorithm reuses the digests of files that kept their size and
    nanosecond mtime instead of reading them again. ``anonymize=False`` keeps each entry's
    uid, gid, user and group names in its header (by default they are 0 and empty; permission
    bits are always kept). ``auto_truncate`` shortens, deterministically, the paths that do
    not fit a 512-byte header (over 255 bytes, or a component over 100), keeping the original
    path in the index (``Entry.source_path``); without it they are refused.

    ``embed_index`` appends to the tape, as its last member (after every entry, before the
    footer), a CSV named ``.tarindex_<first 16 hex of the fingerprint>.csv`` listing every
    entry (see :mod:`atartape.format.embedded`), so that a reader can fetch one file of the
    archive without scanning it. ``progress`` (a :class:`~atartape.Progress`) counts the
    entries scanned and the bytes hashed while the recording runs.

    Views (see :mod:`atartape.views`): ``compress="zstd"`` makes a seekable zstd view, frames of
    ``frame_size`` plain bytes compressed at ``level`` (each compressed once now, to learn its
    size and tag); ``seal`` (age recipients, ``age1…`` public keys) or ``passphrase`` makes
    an age-sealed view (of the compressed view when there is one), whose file key is kept in
    ``<index>.key`` (mode 0600) beside the index; ``work_factor`` is the passphrase's scrypt
    cost (log2). The tape then plays, and is served, as that view by default.

    The index is written to a temporary file beside its destination and renamed into place:
    on any error no index is written and an existing one is left as it was. Raises
    :class:`SourceNotFoundError` (no such folder), :class:`TapeExistsError` (an index exists
    and ``overwrite`` is false), :class:`PathConstraintError` (every path that cannot be
    stored, listed at once) and :class:`ValueError` for a bad option.
    """
    algorithm = _algorithm(checksum)
    view_options = ViewOptions(compress, level, frame_size, seal, passphrase, work_factor)
    if arcname is not None:
        arcname = arcname.strip("/")
        reason = paths.violation(arcname, is_dir=True)
        if reason is not None:
            raise PathConstraintError([(arcname, reason)])
    selection = Selection.of(exclude, noise)
    source = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(source))
    if not await anyio.to_thread.run_sync(os.path.isdir, source):
        raise SourceNotFoundError(f"source folder {source!r} does not exist or is not a folder")
    index_path = await anyio.to_thread.run_sync(
        os.path.abspath, os.fspath(index_path) if index_path else default_index_path(source)
    )
    if not overwrite and await anyio.to_thread.run_sync(os.path.exists, index_path):
        raise TapeExistsError(
            f"a tape index already exists at {index_path!r} (pass overwrite=True to replace it)"
        )
    arc_root = arcname or os.path.basename(source) or "root"
    folders = ListedFolders(source, arc_root, selection, index_path)
    known = await _known_digests(index_path, algorithm) if algorithm else {}
    options = ScanOptions(
        checksum=algorithm, known=known, owners=not anonymize, auto_truncate=auto_truncate
    )
    # Made before the scan: creating .tartape changes the root's mtime, which the scan must see.
    try:
        await anyio.to_thread.run_sync(_prepare_folder, index_path)
    except OSError as exc:
        raise PermissionError(
            exc.errno,
            f"cannot write the tape index there ({exc.strerror}); "
            "choose another place with index_path= (--index)",
            index_path,
        ) from None
    settings: dict[str, Any] = {
        "arc_root": arc_root,
        "source_root": source,
        "checksum": algorithm,
        "anonymized": anonymize,
        "noise": list(selection.noise),
        "exclude": list(selection.patterns),
        "exclude_predicate": selection.predicate is not None,
    }

    def recording() -> tuple[list[Entry], list[tuple[Entry, bytes]], dict[str, Any]]:
        """In a worker thread: the scan, and what follows from it (lists of many entries)."""
        result = scan(source, arc_root, folders, options, progress=progress)
        return _laid_out(result.entries, result.total_size, embed_index, settings)

    entries, embedded, meta = await anyio.to_thread.run_sync(recording)
    temp_path = files.temp_name(index_path)
    key_temp = files.temp_name(key_path(index_path))
    try:
        await index.write_index(temp_path, meta, entries, embedded)
        file_key = None
        if view_options.wanted:
            file_key = await _record_views(temp_path, meta, entries, embedded, view_options)
        if file_key is not None:
            # The key goes in place before the index that needs it, with the previous
            # recording's key after it: a play of either index finds its own.
            previous = await anyio.to_thread.run_sync(read_keys, key_path(index_path))
            sealed_key = key_file_bytes(file_key, *previous[:1])
            await anyio.to_thread.run_sync(
                lambda: files.write_atomically(key_temp, sealed_key, mode=0o600)
            )
            await anyio.to_thread.run_sync(os.replace, key_temp, key_path(index_path))
        await anyio.to_thread.run_sync(files.publish, temp_path, index_path)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                files.unlink_quietly, temp_path, temp_path + "-journal", key_temp
            )
    return Tape.from_meta(index_path, meta)


async def _record_views(
    temp_path: str,
    meta: dict[str, Any],
    entries: list[Entry],
    embedded: list[tuple[Entry, bytes]],
    options: ViewOptions,
) -> bytes | None:
    """Read the tape just written to ``temp_path`` once and add its views to it; ``meta`` gets
    them and the identity that covers them. Returns the seal's file key, if any."""
    plain_tape = Tape.from_meta(temp_path, meta)
    player = TapePlayer(plain_tape, view="plain", md5=False)
    made = await record_views(player.chunks, meta["total_size"], options, meta["fingerprint"])
    meta["views"] = made.meta
    promises = index.meta_promises(meta, embedded)
    meta["identity"] = await anyio.to_thread.run_sync(lambda: identity(entries, promises=promises))
    await index.write_views(
        temp_path, {"views": made.meta, "identity": meta["identity"]}, made.frames, made.blocks
    )
    return made.file_key


def _laid_out(
    entries: list[Entry], total_size: int, embed_index: bool, settings: dict[str, Any]
) -> tuple[list[Entry], list[tuple[Entry, bytes]], dict[str, Any]]:
    """The embedded index (if asked for) and the meta of a recording of ``entries``."""
    tape_fingerprint = fingerprint(entries)
    embedded: list[tuple[Entry, bytes]] = []
    if embed_index:
        member = index_member(entries, tape_fingerprint, total_size - FOOTER_SIZE)
        embedded.append(member)
        total_size = member[0].end_offset + FOOTER_SIZE
    meta: dict[str, Any] = {
        "format": index.FORMAT,
        "version": index.VERSION,
        "fingerprint": tape_fingerprint,
        "total_size": total_size,
        "entry_count": len(entries),
        "file_count": sum(1 for e in entries if e.kind is EntryKind.FILE),
        "recorded_at": time.time(),
        "data_size": sum(e.size for e in entries),
        "auto_truncated": sum(1 for e in entries if e.source_path is not None),
        **settings,
    }
    promises = index.meta_promises(meta, embedded)
    meta["identity"] = identity(entries, promises=promises)
    return entries, embedded, meta


def _algorithm(checksum: str | bool | None) -> str | None:
    if checksum is None or checksum is False:
        return None
    if checksum is True:
        return "sha256"
    if isinstance(checksum, str) and checksum.lower().strip() in CHECKSUMS:
        return checksum.lower().strip()
    raise InvalidArgumentError(
        f"checksum must be one of {', '.join(CHECKSUMS)}, True (sha256) or None, not {checksum!r}"
    )


async def _known_digests(index_path: str, algorithm: str) -> dict[str, tuple[int, int, str]]:
    """The digests the index being replaced holds, by path in the folder (if it used
    ``algorithm``): a file that kept its size and nanosecond mtime keeps its digest."""
    if not await anyio.to_thread.run_sync(os.path.isfile, index_path):
        return {}
    try:
        async with await index.open_index(index_path, legacy=True) as old:
            if old.meta.get("checksum") != algorithm:
                return {}
            cut = len(paths.to_bytes(old.meta["arc_root"]))
            return {
                paths.from_bytes(relative_source(row, cut)): (row.size, row.mtime_ns, row.checksum)
                async for row in old.rows()
                if row.kind == "file" and row.checksum is not None
            }
    except (TarTapeError, OSError):  # an unreadable old index: hash everything again
        return {}


class TapeRecorder:
    """Records a folder into a tape index: the second TarTape's form of :func:`record`.

    Takes :func:`record`'s arguments; :meth:`commit` records and returns the fingerprint.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        exclude: Exclude = None,
        noise: Sequence[str] = DEFAULT_NOISE,
        overwrite: bool = False,
        arcname: str | None = None,
        checksum: str | bool | None = None,
        anonymize: bool = True,
        auto_truncate: bool = False,
        embed_index: bool = False,
        compress: str | None = None,
        seal: Sequence[str] = (),
        passphrase: str | bytes | None = None,
    ) -> None:
        self.source = source
        self.options: dict[str, Any] = {
            "index_path": index_path,
            "exclude": exclude,
            "noise": noise,
            "overwrite": overwrite,
            "arcname": arcname,
            "checksum": checksum,
            "anonymize": anonymize,
            "auto_truncate": auto_truncate,
            "embed_index": embed_index,
            "compress": compress,
            "seal": seal,
            "passphrase": passphrase,
        }
        self.tape: Tape | None = None

    async def commit(self) -> str:
        """Record the folder (see :func:`record`, which raises the same errors) and return the
        tape's fingerprint; the tape itself is then :attr:`tape`."""
        self.tape = await record(self.source, **self.options)
        return self.tape.fingerprint


def _prepare_folder(index_path: str) -> None:
    """Make the index's folder, and clear what killed recordings left there."""
    os.makedirs(os.path.dirname(index_path), exist_ok=True)
    files.remove_stale(index_path)
