"""Recording: scan a folder once and write its tape index, atomically."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import anyio.to_thread

from ._engine import files, index
from ._engine.scan import Exclude, ScanResult, scan
from ._engine.store import open_store
from .errors import PathConstraintError, SourceNotFoundError, TapeExistsError
from .format import paths
from .format.embedded import index_member
from .format.header import FOOTER_SIZE, EntryKind
from .format.layout import Entry, fingerprint
from .tape import Tape, default_index_path

__all__ = ["TapeRecorder", "record"]

CHECKSUMS = ("md5", "sha256")


class TapeRecorder:
    """Records a folder into a tape index.

    ``index_path`` defaults to ``<source>/.tartape/index.db``; the index folder itself is never
    archived. ``exclude`` takes glob patterns matched against names and relative paths, or a
    predicate on the relative path. ``arcname`` replaces the folder's name as the first
    component of every archive path. ``checksum`` (``"md5"`` or ``"sha256"``) stores a digest
    of every file, read at record time.

    ``embed_index`` appends to the tape, as its last member (after every sorted entry, before
    the footer), a CSV named ``.tarindex_<first 16 hex of the fingerprint>.csv`` at the top
    level, whose rows are ``name,size,start_block,blocks`` for every entry before it (see
    :mod:`atartape.members`), so that a reader can fetch one file of the archive without
    scanning it. Its bytes are stored in the index; the fingerprint covers the real entries
    only, and ``total_size`` includes the index member.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        index_path: str | os.PathLike[str] | None = None,
        exclude: Exclude = None,
        overwrite: bool = False,
        arcname: str | None = None,
        checksum: str | None = None,
        embed_index: bool = False,
    ) -> None:
        if checksum is not None and checksum not in CHECKSUMS:
            raise ValueError(f"checksum must be one of {CHECKSUMS} or None, not {checksum!r}")
        if arcname is not None:
            arcname = arcname.strip("/")
            reason = paths.violation(arcname, is_dir=True)
            if reason is not None:
                raise PathConstraintError([(arcname, reason)])
        self.source = os.fspath(source)
        self.index_path = os.fspath(index_path) if index_path is not None else None
        self.exclude = exclude
        self.overwrite = overwrite
        self.arcname = arcname
        self.checksum = checksum
        self.embed_index = embed_index
        self.result: ScanResult | None = None

    async def commit(self) -> str:
        """Scan the folder, write the index atomically and return the tape's fingerprint.

        Raises :class:`SourceNotFoundError` (no such folder), :class:`TapeExistsError` (an
        index exists and ``overwrite`` is false) and :class:`PathConstraintError` (every path
        that cannot be stored, listed at once). On any error no index is written, and an
        existing one is left as it was.
        """
        return (await self._record()).fingerprint

    async def _record(self) -> Tape:
        source = await anyio.to_thread.run_sync(os.path.abspath, self.source)
        if not await anyio.to_thread.run_sync(os.path.isdir, source):
            raise SourceNotFoundError(f"source folder {self.source!r} does not exist")
        index_path = await anyio.to_thread.run_sync(
            os.path.abspath, self.index_path or default_index_path(source)
        )
        if not self.overwrite and await anyio.to_thread.run_sync(os.path.exists, index_path):
            raise TapeExistsError(
                f"a tape index already exists at {index_path!r} (pass overwrite=True to replace it)"
            )
        temp_path = files.temp_name(index_path)
        skip = frozenset({index_path, temp_path, temp_path + "-journal"})
        arc_root = self.arcname or os.path.basename(source) or "root"
        # Made before the scan: creating .tartape changes the root's mtime, which the scan
        # must see, so that a later one-shot play of the folder writes the same root header.
        await anyio.to_thread.run_sync(_prepare_folder, index_path)
        result = await anyio.to_thread.run_sync(
            lambda: scan(source, arc_root, exclude=self.exclude, skip=skip, checksum=self.checksum)
        )
        self.result = result
        entries = result.entries
        tape_fingerprint = fingerprint(entries)
        total_size = result.total_size
        embedded: tuple[Entry, bytes] | None = None
        if self.embed_index:
            embedded = await anyio.to_thread.run_sync(
                index_member, entries, tape_fingerprint, total_size - FOOTER_SIZE
            )
            total_size = embedded[0].end_offset + FOOTER_SIZE
        meta: dict[str, Any] = {
            "format": index.FORMAT,
            "version": index.VERSION,
            "fingerprint": tape_fingerprint,
            "total_size": total_size,
            "entry_count": len(entries),
            "file_count": sum(1 for e in entries if e.kind is EntryKind.FILE),
            "arc_root": arc_root,
            "source_root": source,
            "recorded_at": time.time(),
            "checksum": self.checksum,
        }
        try:
            async with await open_store(temp_path) as store:
                schema = index.SCHEMA + (index.EMBEDDED_SCHEMA if embedded else "")
                await store.executescript(schema)
                await store.execute("BEGIN")
                await store.executemany(index.INSERT_META, list(meta.items()))
                await index.write_entries(store, entries)
                if embedded is not None:
                    await index.write_embedded(store, *embedded)
                await store.commit()
            await anyio.to_thread.run_sync(files.publish, temp_path, index_path)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    files.unlink_quietly, temp_path, temp_path + "-journal"
                )
        return Tape._from_meta(index_path, meta, source)


def _prepare_folder(index_path: str) -> None:
    """Make the index's folder, and clear what killed recordings left there."""
    os.makedirs(os.path.dirname(index_path), exist_ok=True)
    files.remove_stale(index_path)


async def record(
    source: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | None = None,
    exclude: Exclude = None,
    overwrite: bool = False,
    arcname: str | None = None,
    checksum: str | None = None,
    embed_index: bool = False,
) -> Tape:
    """Record ``source`` into a tape and return it, ready to play. See :class:`TapeRecorder`."""
    recorder = TapeRecorder(
        source,
        index_path=index_path,
        exclude=exclude,
        overwrite=overwrite,
        arcname=arcname,
        checksum=checksum,
        embed_index=embed_index,
    )
    return await recorder._record()
