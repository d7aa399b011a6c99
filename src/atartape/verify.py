"""Check that a tape's source still holds the promise of its index, before (or instead of) playing.

Playing stops at the first entry that differs from the index; verifying looks at every entry (or a
canary sample) and reports every difference at once, without producing the stream. It makes the
very check playing makes (see :mod:`atartape._engine.source`), in worker threads, batched: one
thread hop checks many entries (or hashes up to a byte budget of a large file), so a tree of small
files costs a few hops, and cancellation is seen between hops.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import random
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread

from ._engine.beneath import Beneath
from ._engine.index import Index, Row, meta_promises, open_index
from ._engine.source import (
    Folders,
    FolderSource,
    ListedFolders,
    Where,
    check_entry,
    folders_for,
    mismatch,
    open_file,
    open_root,
)
from .errors import (
    ChecksumsNotRecordedError,
    InvalidArgumentError,
    TapeFormatError,
    TarIntegrityError,
)
from .format import paths
from .format.events import Progress
from .format.header import FOOTER_SIZE
from .format.layout import BLOCK_ROWS, Block, Entry, block_digest, fingerprint, tree_identity
from .tape import Tape

__all__ = ["Difference", "Reason", "VerifyError", "VerifyReport"]

Reason = Literal["missing", "type", "size", "mtime", "content", "unreadable", "added", "removed"]

HOP_ENTRIES = 512  # entries checked per thread hop
HOP_BYTES = 16 * 1024 * 1024  # bytes hashed per thread hop (content checks)
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Difference:
    """One entry that no longer matches the index.

    ``reason`` is one of ``"missing"`` (gone), ``"type"`` (say a file became a folder),
    ``"size"``, ``"mtime"``, ``"content"`` (the digest differs although size and mtime match,
    or a symlink points elsewhere), ``"unreadable"`` (it exists but cannot be read, e.g. no
    permission), and for a folder ``"added"`` or ``"removed"`` (names that are not OS noise
    were added to it, or only removed from it).
    ``message`` says what was recorded and what was found.
    """

    arc_path: str
    reason: Reason
    message: str

    def __str__(self) -> str:
        return f"{self.arc_path}: {self.message}"


VerifyError = Difference
"""The former name of :class:`Difference` (it is a record, not an exception)."""


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :meth:`TapePlayer.verify`: truthy when every checked entry holds.

    ``checked`` counts the entries examined (all of them when ``deep``), ``hashed_bytes`` the
    bytes re-hashed for ``content`` checks, ``differences`` lists every difference found, one
    per entry, in stream order.
    """

    deep: bool
    content: bool
    checked: int = 0
    hashed_bytes: int = 0
    differences: list[Difference] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        """``True`` when no difference was found."""
        return not self.differences

    @property
    def errors(self) -> list[Difference]:
        """The same as :attr:`differences` (its former name)."""
        return self.differences

    def __str__(self) -> str:
        kind = "deep check" if self.deep else "canary check"
        head = f"{kind} of {self.checked} entries" + (" with content" if self.content else "")
        if not self.differences:
            return f"{head}: all hold"
        lines = "\n  ".join(str(difference) for difference in self.differences)
        return f"{head}: {len(self.differences)} differ\n  {lines}"


# ----------------------------------------------------------------------- sync checker


@dataclass(slots=True)
class _Hashing:
    row: Row
    fd: int
    digest: hashlib._Hash
    remaining: int


class _Checker:
    """Checks queued entries against the source, a bounded amount per call of :meth:`hop`.

    Runs in a worker thread, one hop at a time; a large file being hashed carries over from one
    hop to the next.
    """

    def __init__(
        self,
        root: Beneath,
        arc_root: str,
        folders: Folders,
        algorithm: str | None,
        *,
        hop_entries: int = HOP_ENTRIES,
        hop_bytes: int = HOP_BYTES,
        progress: Progress | None = None,
    ) -> None:
        self.progress = progress if progress is not None else Progress()
        self.locate = FolderSource(root, arc_root).where  # the caller closes ``root``
        self.folders = folders
        self.algorithm = algorithm
        self.hop_entries = hop_entries
        self.hop_bytes = hop_bytes
        self.queue: deque[Row] = deque()
        self.differences: list[Difference] = []
        self.checked = 0
        self.hashed = 0
        self._hashing: _Hashing | None = None

    @property
    def idle(self) -> bool:
        return self._hashing is None and not self.queue

    def close(self) -> None:
        """Close the file being hashed, if any (between hops)."""
        if self._hashing is not None:
            os.close(self._hashing.fd)
            self._hashing = None

    def hop(self) -> None:
        """Check up to ``hop_entries`` entries, hashing at most about ``hop_bytes``."""
        entries = 0
        budget = self.hop_bytes
        while entries < self.hop_entries and budget > 0:
            if self._hashing is not None:
                budget -= self._hash_some(budget)
                continue
            if not self.queue:
                return
            row = self.queue.popleft()
            entries += 1
            self.checked += 1
            self.progress.entries += 1
            try:
                self._check(row)
            except TarIntegrityError as error:
                self._note(error)

    def _note(self, error: TarIntegrityError) -> None:
        reason: Reason = error.reason  # type: ignore[assignment]
        message = str(error).split(": ", 1)[-1]
        self.differences.append(Difference(error.arc_path or "", reason, message))

    def _check(self, row: Row) -> None:
        path = self.locate(row)
        if row.kind != "file" or self.algorithm is None or row.checksum is None:
            check_entry(path, row, self.folders)
            return
        fd, _ = open_file(path, row)
        self._hashing = _Hashing(
            row, fd, hashlib.new(self.algorithm, usedforsecurity=False), row.size
        )

    def _hash_some(self, budget: int) -> int:
        """Hash up to ``budget`` bytes of the current file; finish it when done. Returns bytes."""
        job = self._hashing
        assert job is not None
        done = 0
        while job.remaining > 0 and done < budget:
            data = os.read(job.fd, min(_READ_SIZE, job.remaining))
            if not data:
                break
            job.digest.update(data)
            job.remaining -= len(data)
            done += len(data)
        self.hashed += done
        self.progress.bytes += done
        if job.remaining > 0 and done >= budget:
            return max(done, 1)  # more to hash in the next hop
        extra = os.read(job.fd, 1) if job.remaining == 0 else b""
        self.close()
        row, found = job.row, job.digest.hexdigest()
        expected = row.checksum
        if job.remaining or extra:
            self._note(mismatch(row, "content", "changed size while being hashed"))
        elif found != expected:
            self._note(
                mismatch(
                    row,
                    "content",
                    "content changed although size and mtime did not: recorded "
                    f"{self.algorithm} {expected}, now {found}",
                )
            )
        return max(done, 1)


# ----------------------------------------------------------------------- entry selection


class _Canaries:
    """Picks the canary entries while the index streams by, in one pass and bounded memory."""

    def __init__(self, sample: int, seed: int | str | None) -> None:
        self.sample = sample
        self.random = random.Random(seed)
        self.first: Row | None = None
        self.last: Row | None = None
        self.largest: Row | None = None
        self.newest: Row | None = None
        self.reservoir: list[Row] = []
        self.seen = 0

    def add(self, row: Row) -> None:
        if self.first is None:
            self.first = row
        self.last = row
        if row.kind == "file" and (self.largest is None or row.size > self.largest.size):
            self.largest = row
        if self.newest is None or row.mtime_ns > self.newest.mtime_ns:
            self.newest = row
        # Reservoir sampling (algorithm R): every entry has the same chance to be picked.
        self.seen += 1
        if len(self.reservoir) < self.sample:
            self.reservoir.append(row)
        else:
            slot = self.random.randrange(self.seen)
            if slot < self.sample:
                self.reservoir[slot] = row

    def picked(self) -> list[Row]:
        chosen = {
            row.start_offset: row
            for row in (self.first, self.last, self.largest, self.newest, *self.reservoir)
            if row is not None
        }
        return [chosen[key] for key in heapq.nsmallest(len(chosen), chosen)]


# ----------------------------------------------------------------------- async side


async def verify(
    tape: Tape,
    source_root: str | os.PathLike[str] | None = None,
    *,
    deep: bool = True,
    content: bool = False,
    sample: int = 16,
    seed: int | str | None = None,
    hop_entries: int = HOP_ENTRIES,
    hop_bytes: int = HOP_BYTES,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check ``tape``'s source (``source_root``, by default where it was recorded).

    See :meth:`TapePlayer.verify`, the public way to call it. A deep check also checks the
    index itself: its rows lie back to back and its fingerprint and identity are those its rows
    give. Raises :class:`ChecksumsNotRecordedError` when ``content`` is asked of a tape recorded
    without checksums (there is nothing to compare with), :class:`InvalidArgumentError` when
    ``sample`` is negative (both are ``ValueError``),
    :class:`SourceNotFoundError` when the source folder is missing, :class:`TapeChangedError`
    when the index was re-recorded and :class:`TapeFormatError` when it is damaged.
    Differences of the source are never raised: they are listed in the returned report.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise InvalidArgumentError(f"sample must be a non-negative int, not {sample!r}")
    if content and tape.checksum_algorithm is None:
        raise ChecksumsNotRecordedError(
            f"tape {tape.name!r} was recorded without checksums, so content cannot be verified: "
            "record it with checksum='sha256' (atartape record --checksum sha256), "
            "or verify with content=False"
        )
    folder = os.fspath(source_root) if source_root is not None else tape.source_root
    root = await anyio.to_thread.run_sync(open_root, folder, tape.name)
    try:
        return await _verify(
            tape, root, deep, content, sample, seed, hop_entries, hop_bytes, progress
        )
    finally:
        root.close()


async def _verify(
    tape: Tape,
    root: Beneath,
    deep: bool,
    content: bool,
    sample: int,
    seed: int | str | None,
    hop_entries: int,
    hop_bytes: int,
    progress: Progress | None,
) -> VerifyReport:
    """:func:`verify`, beneath the handle ``root`` on the source folder."""
    canaries = None if deep else _Canaries(sample, seed)
    async with await open_index(tape.index_path, expected=tape.identity, shared=True) as index:
        checker = _Checker(
            root,
            tape.arc_root,
            folders_for(index, root.root),
            tape.checksum_algorithm if content else None,
            hop_entries=hop_entries,
            hop_bytes=hop_bytes,
            progress=progress,
        )
        audit = _IndexAudit(index) if deep else None
        try:
            async with aclosing(index.rows()) as rows:
                async for row in rows:
                    if audit is not None:
                        audit.add(row)
                    if canaries is not None:
                        canaries.add(row)
                        continue
                    checker.queue.append(row)
                    if len(checker.queue) >= hop_entries:
                        await _drain(checker)
            if canaries is not None:
                checker.queue.extend(canaries.picked())
            await _drain(checker)
        finally:
            checker.close()
        if audit is not None:
            await audit.finish()
        differences = [await _detail(index, root, d) for d in checker.differences]
    return VerifyReport(
        deep=deep,
        content=content,
        checked=checker.checked,
        hashed_bytes=checker.hashed,
        differences=differences,
    )


class _IndexAudit:
    """The deep check of the index itself, as its rows stream by."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.entries: list[Entry] = []
        self.expected = 0
        self.blocks: list[Block] = []  # the identity's tree, as the rows give it
        self._chunk: list[tuple[object, ...]] = []

    def add(self, row: Row) -> None:
        if row.start_offset != self.expected:
            raise self._damaged(
                f"the entry {row.path!r} starts at {row.start_offset}, where the entry before "
                f"it ends at {self.expected}"
            )
        self.expected = row.end_offset
        self.entries.append(row.entry())
        self._chunk.append(row.values())
        if len(self._chunk) == BLOCK_ROWS:
            self._close_block()

    def _close_block(self) -> None:
        first = self._chunk[0][0]
        assert isinstance(first, int)
        self.blocks.append(Block(first, len(self._chunk), block_digest(self._chunk)))
        self._chunk = []

    def _damaged(self, what: str) -> TapeFormatError:
        return TapeFormatError(f"the index {self.index.where} is damaged: {what}")

    async def finish(self) -> None:
        meta = self.index.meta
        embedded_rows = await self.index.embedded_rows()
        end = embedded_rows[-1].end_offset if embedded_rows else self.expected
        if end + FOOTER_SIZE != meta["total_size"]:
            raise self._damaged(f"its entries end at {end}, its total size is {meta['total_size']}")
        if fingerprint(self.entries) != meta["fingerprint"]:
            raise self._damaged("its rows do not give the fingerprint it records")
        if self._chunk:
            self._close_block()
        data = [(r.entry(), await self.index.embedded_data(r.start_offset)) for r in embedded_rows]
        if self.index.version >= 3 and (  # a tartape catalog's identity is made from its rows
            tree_identity(self.blocks, meta_promises(meta, data)) != meta["identity"]
        ):
            raise self._damaged("its rows do not give the identity it records")
        if (await self.index.stored_tree()).blocks != self.blocks:
            raise self._damaged("its block digests are not the ones its rows give")


async def _detail(index: Index, root: Beneath, difference: Difference) -> Difference:
    """A folder whose names changed: say which names were added or removed."""
    if difference.reason != "mtime" or not difference.message.startswith("folder changed"):
        return difference
    row = await index.row_by_path(paths.to_bytes(difference.arc_path))
    if row is None or row.kind != "dir":  # pragma: no cover - it was just read
        return difference
    recorded = set(await index.child_names(row.arc_path))
    where = FolderSource(root, index.meta["arc_root"]).where(row)
    folders = folders_for(index, root.root)
    try:
        now = await anyio.to_thread.run_sync(_names_now, where, row, folders)
    except (OSError, TarIntegrityError):  # gone (or swapped) since it was checked: as it was
        return difference
    added = sorted(now - recorded)
    removed = sorted(recorded - now)
    if not added and not removed:
        return difference
    said = []
    if added:
        said.append("added " + ", ".join(repr(paths.from_bytes(n)) for n in added[:10]))
    if removed:
        said.append("removed " + ", ".join(repr(paths.from_bytes(n)) for n in removed[:10]))
    reason: Reason = "added" if added else "removed"
    return Difference(
        difference.arc_path, reason, f"names changed since recording: {'; '.join(said)}"
    )


def _names_now(where: Where, row: Row, folders: Folders) -> set[bytes]:
    """The names in the folder of ``row`` that count, as the folder check counts them."""
    if not isinstance(folders, ListedFolders):
        return set(where[0].listdir(where[1]))
    return {os.fsencode(name) for name in folders.names(where, row)}


async def _drain(checker: _Checker) -> None:
    while not checker.idle:
        await anyio.to_thread.run_sync(checker.hop)
