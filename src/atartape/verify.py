"""Check that a tape's source still holds the promise of its index, before (or instead of) playing.

Playing stops at the first file that differs from the index; verifying looks at every entry (or a
canary sample) and reports every difference at once, without producing the stream. The checks run
in worker threads, batched: one thread hop checks many entries (or hashes up to a byte budget of a
large file), so a tree of small files costs a few hops, and cancellation is seen between hops.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import random
import stat
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import anyio.to_thread

from . import paths
from ._errors import SourceNotFoundError
from .header import EntryKind
from .layout import Entry
from .tape import Tape

__all__ = ["Reason", "VerifyError", "VerifyReport", "verify_tape"]

Reason = Literal["missing", "type", "size", "mtime", "content", "unreadable"]

HOP_ENTRIES = 512  # entries checked per thread hop
HOP_BYTES = 16 * 1024 * 1024  # bytes hashed per thread hop (content checks)
_READ_SIZE = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_NONBLOCK", 0)
_KIND_NAMES = {
    EntryKind.FILE: "a file",
    EntryKind.DIRECTORY: "a folder",
    EntryKind.SYMLINK: "a symlink",
}


@dataclass(frozen=True, slots=True)
class VerifyError:
    """One entry that no longer matches the index.

    ``reason`` is one of ``"missing"`` (gone), ``"type"`` (say a file became a folder),
    ``"size"``, ``"mtime"`` (for a folder: entries were added, removed or renamed in it),
    ``"content"`` (the digest differs although size and mtime match, or a symlink points
    elsewhere) and ``"unreadable"`` (it exists but cannot be examined, e.g. no permission).
    ``message`` says what was recorded and what was found.
    """

    arc_path: str
    reason: Reason
    message: str

    def __str__(self) -> str:
        return f"{self.arc_path}: {self.message}"


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :meth:`TapePlayer.verify`: truthy when every checked entry holds.

    ``checked`` counts the entries examined (all of them when ``deep``), ``hashed_bytes`` the
    bytes re-hashed for ``content`` checks, ``errors`` lists every difference found, one per
    entry, in stream order.
    """

    deep: bool
    content: bool
    checked: int = 0
    hashed_bytes: int = 0
    errors: list[VerifyError] = field(default_factory=list)

    def __bool__(self) -> bool:
        return not self.errors

    @property
    def ok(self) -> bool:
        """``True`` when no difference was found."""
        return not self.errors

    def __str__(self) -> str:
        kind = "deep" if self.deep else "canary"
        head = f"{kind} check of {self.checked} entries" + (" with content" if self.content else "")
        if not self.errors:
            return f"{head}: all hold"
        lines = "\n  ".join(str(error) for error in self.errors)
        return f"{head}: {len(self.errors)} differ\n  {lines}"


# ----------------------------------------------------------------------- sync checker


@dataclass(slots=True)
class _Hashing:
    entry: Entry
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
        self.root = root
        self.arc_root = arc_root
        self.algorithm = algorithm
        self.hop_entries = hop_entries
        self.hop_bytes = hop_bytes
        self.queue: deque[Entry] = deque()
        self.errors: list[VerifyError] = []
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
            entry = self.queue.popleft()
            entries += 1
            self.checked += 1
            self._check(entry)

    def _fail(self, entry: Entry, reason: Reason, message: str) -> None:
        self.errors.append(VerifyError(entry.arc_path, reason, message))

    def _check(self, entry: Entry) -> None:
        rel = paths.relative_to_root(entry.arc_path, self.arc_root)
        path = os.path.join(self.root, rel) if rel else self.root
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._fail(entry, "missing", f"missing (recorded as {_KIND_NAMES[entry.kind]})")
            return
        except OSError as exc:
            self._fail(entry, "unreadable", f"cannot be examined ({exc.strerror})")
            return
        found = _kind_of(st.st_mode)
        if found is not entry.kind:
            now = _KIND_NAMES[found] if found is not None else "a special file"
            self._fail(entry, "type", f"recorded as {_KIND_NAMES[entry.kind]}, now {now}")
            return
        if entry.kind is EntryKind.DIRECTORY:
            if rel and st.st_mtime_ns != entry.mtime_ns:  # the root holds the index: skip it
                self._fail(
                    entry,
                    "mtime",
                    "folder mtime changed (entries were added, removed or renamed in it): "
                    f"recorded {entry.mtime_ns} ns, now {st.st_mtime_ns}",
                )
        elif entry.kind is EntryKind.SYMLINK:
            try:
                target = os.readlink(path)
            except OSError as exc:
                self._fail(entry, "unreadable", f"cannot read the link ({exc.strerror})")
                return
            if target != entry.linkname:
                self._fail(
                    entry, "content", f"symlink target changed: {entry.linkname!r} -> {target!r}"
                )
        else:
            if st.st_size != entry.size:
                self._fail(entry, "size", f"size changed: recorded {entry.size}, now {st.st_size}")
            elif st.st_mtime_ns != entry.mtime_ns:
                self._fail(
                    entry,
                    "mtime",
                    f"mtime changed: recorded {entry.mtime_ns} ns, now {st.st_mtime_ns}",
                )
            elif self.algorithm is not None and entry.checksum is not None:
                self._start_hashing(entry, path)

    def _start_hashing(self, entry: Entry, path: str) -> None:
        assert self.algorithm is not None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._fail(entry, "missing", "vanished while being checked")
            else:
                self._fail(entry, "unreadable", f"cannot be opened ({exc.strerror})")
            return
        self._hashing = _Hashing(entry, fd, hashlib.new(self.algorithm), entry.size)

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
        entry = job.entry
        if job.remaining or extra:
            self._fail(entry, "content", "changed size while being hashed")
        elif job.digest.hexdigest() != entry.checksum:
            self._fail(
                entry,
                "content",
                f"content changed although size and mtime did not: recorded {self.algorithm} "
                f"{entry.checksum}, now {job.digest.hexdigest()}",
            )
        return max(done, 1)


def _kind_of(mode: int) -> EntryKind | None:
    if stat.S_ISREG(mode):
        return EntryKind.FILE
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    return None


# ----------------------------------------------------------------------- entry selection


class _Canaries:
    """Picks the canary entries while the index streams by, in one pass and bounded memory."""

    def __init__(self, sample: int, seed: int | str | None) -> None:
        self.sample = sample
        self.random = random.Random(seed)
        self.first: Entry | None = None
        self.last: Entry | None = None
        self.largest: Entry | None = None
        self.newest: Entry | None = None
        self.reservoir: list[Entry] = []
        self.seen = 0

    def add(self, entry: Entry) -> None:
        if self.first is None:
            self.first = entry
        self.last = entry
        if entry.kind is EntryKind.FILE and (
            self.largest is None or entry.size > self.largest.size
        ):
            self.largest = entry
        if self.newest is None or entry.mtime_ns > self.newest.mtime_ns:
            self.newest = entry
        # Reservoir sampling (algorithm R): every entry has the same chance to be picked.
        self.seen += 1
        if len(self.reservoir) < self.sample:
            self.reservoir.append(entry)
        else:
            slot = self.random.randrange(self.seen)
            if slot < self.sample:
                self.reservoir[slot] = entry

    def picked(self) -> list[Entry]:
        chosen = {
            e.start_offset: e
            for e in (self.first, self.last, self.largest, self.newest, *self.reservoir)
            if e is not None
        }
        return [chosen[key] for key in heapq.nsmallest(len(chosen), chosen)]


# ----------------------------------------------------------------------- async side


async def verify_tape(
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

    ``deep`` checks every entry: it exists, has the recorded type, size and mtime (a folder's
    mtime catches entries added or removed in it), and a symlink the recorded target. Otherwise
    only canaries are checked: the first and last entries, the largest file, the most recently
    modified entry and ``sample`` entries picked at random (``seed`` makes the pick repeatable).
    ``content`` also re-hashes each checked file whose size and mtime match and compares the
    digest recorded by ``record(..., checksum=...)``: it catches changes that kept size and mtime.

    Raises :class:`ValueError` when ``content`` is asked of a tape recorded without checksums
    (there is nothing to compare with) or ``sample`` is negative, and
    :class:`SourceNotFoundError` when the source folder is missing. Differences are never
    raised: they are listed in the returned :class:`VerifyReport`.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"sample must be a non-negative int, not {sample!r}")
    if content and tape.checksum_algorithm is None:
        raise ValueError(
            f"tape {tape.name!r} was recorded without checksums, so content cannot be verified: "
            "record it with checksum='sha256' (or 'md5'), or verify with content=False"
        )
    root = os.fspath(source_root) if source_root is not None else tape.source_root
    if not await anyio.to_thread.run_sync(os.path.isdir, root):
        raise SourceNotFoundError(
            f"the source of tape {tape.name!r} is not at {root!r} "
            "(pass source_root= to verify it elsewhere)"
        )
    checker = _Checker(
        root,
        tape.arc_root,
        tape.checksum_algorithm if content else None,
        hop_entries=hop_entries,
        hop_bytes=hop_bytes,
    )
    try:
        if deep:
            async for entry in tape.entries():
                checker.queue.append(entry)
                if len(checker.queue) >= hop_entries:
                    await _drain(checker)
        else:
            canaries = _Canaries(sample, seed)
            async for entry in tape.entries():
                canaries.add(entry)
            checker.queue.extend(canaries.picked())
        await _drain(checker)
    finally:
        checker.close()
    return VerifyReport(
        deep=deep,
        content=content,
        checked=checker.checked,
        hashed_bytes=checker.hashed,
        errors=checker.errors,
    )


async def _drain(checker: _Checker) -> None:
    while not checker.idle:
        await anyio.to_thread.run_sync(checker.hop)
