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
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread

from ._engine import index
from ._engine.index import Row
from ._engine.source import check_entry, mismatch, open_file, require_folder
from ._engine.store import open_store
from .errors import TarIntegrityError
from .format import paths
from .tape import Tape

__all__ = ["Difference", "Reason", "VerifyError", "VerifyReport"]

Reason = Literal["missing", "type", "size", "mtime", "content", "unreadable"]

HOP_ENTRIES = 512  # entries checked per thread hop
HOP_BYTES = 16 * 1024 * 1024  # bytes hashed per thread hop (content checks)
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Difference:
    """One entry that no longer matches the index.

    ``reason`` is one of ``"missing"`` (gone), ``"type"`` (say a file became a folder),
    ``"size"``, ``"mtime"`` (for a folder: names were added, removed or renamed in it),
    ``"content"`` (the digest differs although size and mtime match, or a symlink points
    elsewhere) and ``"unreadable"`` (it exists but cannot be read, e.g. no permission).
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
        root: str,
        arc_root: str,
        algorithm: str | None,
        *,
        hop_entries: int = HOP_ENTRIES,
        hop_bytes: int = HOP_BYTES,
    ) -> None:
        self.root = os.fsencode(root)
        self.arc_root = paths.to_bytes(arc_root)
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
            try:
                self._check(row)
            except TarIntegrityError as error:
                self._note(error)

    def _note(self, error: TarIntegrityError) -> None:
        reason: Reason = error.reason  # type: ignore[assignment]
        message = str(error).split(": ", 1)[-1]
        self.differences.append(Difference(error.arc_path or "", reason, message))

    def _check(self, row: Row) -> None:
        path = self.root + row.arc_path[len(self.arc_root) :]
        if row.kind != "file" or self.algorithm is None or row.checksum is None:
            check_entry(path, row, (self.arc_root,))
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
) -> VerifyReport:
    """Check ``tape``'s source (``source_root``, by default where it was recorded).

    See :meth:`TapePlayer.verify`, the public way to call it. Raises :class:`ValueError` when
    ``content`` is asked of a tape recorded without checksums (there is nothing to compare
    with) or ``sample`` is negative, and :class:`SourceNotFoundError` when the source folder is
    missing. Differences are never raised: they are listed in the returned report.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"sample must be a non-negative int, not {sample!r}")
    if content and tape.checksum_algorithm is None:
        raise ValueError(
            f"tape {tape.name!r} was recorded without checksums, so content cannot be verified: "
            "record it with checksum='sha256' (or 'md5'), or verify with content=False"
        )
    root = os.fspath(source_root) if source_root is not None else tape.source_root
    await anyio.to_thread.run_sync(require_folder, root, tape.name)
    checker = _Checker(
        root,
        tape.arc_root,
        tape.checksum_algorithm if content else None,
        hop_entries=hop_entries,
        hop_bytes=hop_bytes,
    )
    canaries = None if deep else _Canaries(sample, seed)
    try:
        async with await open_store(tape.index_path, readonly=True, must_exist=True) as store:
            offset = 0
            while True:
                rows = await index.rows_from(store, offset)
                for row in rows:
                    if canaries is None:
                        checker.queue.append(row)
                    else:
                        canaries.add(row)
                if canaries is None and len(checker.queue) >= hop_entries:
                    await _drain(checker)
                if len(rows) < index.BATCH_ROWS:
                    break
                offset = rows[-1].start_offset + 1
        if canaries is not None:
            checker.queue.extend(canaries.picked())
        await _drain(checker)
    finally:
        checker.close()
    return VerifyReport(
        deep=deep,
        content=content,
        checked=checker.checked,
        hashed_bytes=checker.hashed,
        differences=checker.differences,
    )


async def _drain(checker: _Checker) -> None:
    while not checker.idle:
        await anyio.to_thread.run_sync(checker.hop)
