"""The receiver's partial file ``OUT.part`` and its state file; every method touches the disk
and runs in a worker thread.

The state file ``OUT.part.state`` (JSON) names the tape the partial file belongs to (its
fingerprint, its recording identity, its size), the segment size, how many segments are
verified and the chain value over them. It is replaced atomically at each checkpoint
(:func:`~atartape._engine.files.write_atomically`: a temporary file named after this process,
fsync, rename), and the temporary files of a receiver that was killed meanwhile are removed
when the next one starts. Bytes past the last checkpoint are never trusted: a receiver that
starts again continues at the checkpoint, and one that cannot write cuts the file back to it.

Beside them, ``OUT.part.digests`` holds the SHA-256 of each verified segment (32 bytes each, in
order), written before the checkpoint that counts it. It is only a hint, never trusted alone: it
is believed only where its digests give the chain value of the state (:meth:`known_digests`),
and then it tells a receiver that re-reads its file *where* the file stopped matching (the
first segment whose digest differs) rather than only that it did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Any

from .._engine.files import (
    fsync_folder,
    pread_exact,
    remove_stale,
    unlink_quietly,
    write_atomically,
)
from ..errors import TransferIntegrityError, TransferProtocolError, TransferRefusedError
from ..format.wire import (
    SegmentHasher,
    chain_next,
    chain_of,
    chain_seed,
    segment_count,
    segment_end,
)

_DIGEST = 32  # bytes of one segment's SHA-256 in OUT.part.digests

__all__ = ["STATE_FORMAT", "STATE_VERSION", "PartFile", "PartialProblem", "load_partial"]

STATE_FORMAT = "atartape-transfer-state"
STATE_VERSION = 2


class PartFile:
    """``OUT.part`` and its state: the verified prefix, the segment being received, the chain."""

    def __init__(
        self,
        out_path: str,
        fingerprint: str,
        identity: str,
        total_size: int,
        segment_size: int,
        *,
        segments: int = 0,
        chain: bytes | None = None,
    ) -> None:
        self.out_path = out_path
        self.part_path = out_path + ".part"
        self.state_path = out_path + ".part.state"
        self.digests_path = out_path + ".part.digests"
        self.fingerprint = fingerprint
        self.identity = identity
        self.total_size = total_size
        self.segment_size = segment_size
        self.segments = segments  # verified (checkpointed) segments
        self.chain = chain if chain is not None else chain_seed(total_size, segment_size)
        self.length = self.verified  # bytes held; those past `verified` are being checked
        self.hasher = SegmentHasher(total_size, segment_size, segments)
        self.received: bytes | None = None  # digest of the segment just completed
        self.fd: int | None = None
        self.digests_fd: int | None = None

    @property
    def tape(self) -> tuple[str, str, int]:
        """What identifies the tape this file belongs to: fingerprint, identity, size."""
        return self.fingerprint, self.identity, self.total_size

    @property
    def verified(self) -> int:
        if self.segments == 0:
            return 0
        return segment_end(self.segments - 1, self.total_size, self.segment_size)

    @property
    def count(self) -> int:
        return segment_count(self.total_size, self.segment_size)

    @property
    def bound(self) -> int:
        """End of the segment being received."""
        return segment_end(self.segments, self.total_size, self.segment_size)

    def create(self) -> None:
        """Start afresh: the state first (so a stray part file always has one), then the file."""
        self._write_state(self.segments, self.chain)
        self.fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.digests_fd = os.open(self.digests_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def reopen(self) -> None:
        """Open the file of an earlier run, to continue at its last checkpoint.

        Bytes past the checkpoint were never checked: they are overwritten as the transfer
        goes on, and cut off when it completes, but left alone until then (a refused sender
        changes nothing).
        """
        self.fd = os.open(self.part_path, os.O_RDWR)
        try:  # a receiver of an earlier version left none: then there is no hint to keep
            self.digests_fd = os.open(self.digests_path, os.O_RDWR)
        except FileNotFoundError:
            self.digests_fd = None
        self.length = self.verified

    def known_digests(self) -> list[bytes] | None:
        """The digests of the verified segments, from ``OUT.part.digests``, if they give the
        chain value of the state (else ``None``: a receiver of an older version, a torn write)."""
        if self.digests_fd is None:
            return None
        data = pread_exact(self.digests_fd, self.segments * _DIGEST, 0)
        digests = [data[i : i + _DIGEST] for i in range(0, len(data), _DIGEST)]
        if len(digests) != self.segments:
            return None
        if chain_of(digests, self.total_size, self.segment_size) != self.chain:
            return None
        return digests

    def append(self, data: memoryview) -> None:
        """Write ``data`` at the end of what is held and hash it.

        Raises :class:`OSError` if the disk fails (full, read-only, I/O error): the file is
        then cut back to its last checkpoint (best effort), the only bytes it trusts.
        """
        assert self.fd is not None
        try:
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, data[written:], self.length + written)
        except OSError:
            self.rewind()
            raise
        for _index, digest in self.hasher.feed(data):
            self.received = digest
        self.length += len(data)

    def rewind(self) -> None:
        """Forget the bytes past the last checkpoint, and cut them off the file if possible."""
        self.length = self.verified
        self.hasher = SegmentHasher(self.total_size, self.segment_size, self.segments)
        self.received = None
        if self.fd is not None:
            # If even that fails, the state file still says where the trusted bytes end.
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.verified)

    def seal(self, index: int, digest: bytes) -> None:
        """Check the segment just received against the sender's digest, then checkpoint.

        Raises :class:`TransferProtocolError` if the segment is not complete, and
        :class:`TransferIntegrityError` (after cutting the file back) if the digest differs.
        """
        if index != self.segments or self.length != self.bound or index >= self.count:
            raise TransferProtocolError(
                f"SEGMENT {index} out of place (holding {self.length} bytes)"
            )
        ours, self.received = self.received, None
        if ours != digest:
            self.rewind()
            raise TransferIntegrityError(
                f"segment {index} (bytes {self.verified} to {self.bound}) of "
                f"{self.part_path} does not match the sender's digest; it was cut off"
            )
        assert self.fd is not None
        chain = chain_next(self.chain, digest)
        try:
            os.fsync(self.fd)
            if self.digests_fd is not None:  # a hint: no fsync of its own (see the module)
                os.pwrite(self.digests_fd, digest, index * _DIGEST)
            self._write_state(self.segments + 1, chain)
        except OSError:
            self.rewind()  # the state on disk still names the previous checkpoint
            raise
        self.chain = chain
        self.segments += 1

    def finalize(self) -> None:
        """fsync, rename ``OUT.part`` to ``OUT``, then remove the state file."""
        assert self.fd is not None
        os.ftruncate(self.fd, self.length)
        os.fsync(self.fd)
        self.close()
        os.replace(self.part_path, self.out_path)
        fsync_folder(os.path.dirname(os.path.abspath(self.out_path)))
        unlink_quietly(self.state_path, self.digests_path)

    def discard(self) -> None:
        self.close()
        unlink_quietly(self.part_path, self.state_path, self.digests_path)

    def close(self) -> None:
        if self.digests_fd is not None:
            fd, self.digests_fd = self.digests_fd, None
            os.close(fd)
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def _write_state(self, segments: int, chain: bytes) -> None:
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "identity": self.identity,
            "total_size": self.total_size,
            "segment_size": self.segment_size,
            "segments": segments,
            "verified": segment_end(segments - 1, self.total_size, self.segment_size)
            if segments
            else 0,
            "chain": chain.hex(),
        }
        write_atomically(self.state_path, json.dumps(state).encode())


@dataclasses.dataclass(frozen=True)
class PartialProblem:
    """Why ``OUT.part`` cannot be resumed: ``what`` names the file and what is wrong with it
    (``"OUT.part is damaged at byte N: ..."``), ``offset`` the byte where it stops matching
    what was checked, when that is known."""

    what: str
    offset: int | None = None


def load_partial(out_path: str, force: bool) -> PartFile | PartialProblem | None:
    """In a worker thread: what an earlier run left, opened to continue at its last checkpoint.

    First removes the temporary files that receivers no longer running left beside the state
    and code files. Raises :class:`TransferRefusedError` when ``OUT`` exists, or when its
    folder does not, unless ``force``. Returns ``None`` if there is nothing to resume, and a
    :class:`PartialProblem` (changing nothing) when ``OUT.part`` cannot be trusted (no or
    unreadable state, shorter than its state says); with ``force`` such a file is discarded
    instead (and ``OUT`` will be replaced).
    """
    part_path, state_path = out_path + ".part", out_path + ".part.state"
    if os.path.exists(out_path) and not force:
        raise TransferRefusedError(f"{out_path} already exists (force replaces it)")
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise TransferRefusedError(f"the folder {parent} does not exist")
    remove_stale(state_path)
    remove_stale(out_path + ".part.code")
    try:
        held = os.path.getsize(part_path)
    except FileNotFoundError:
        held = -1
    problem: PartialProblem | None = None
    partial: PartFile | None = None
    try:
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        if held > 0:
            problem = PartialProblem(
                f"{part_path} holds {held} bytes but has no state file ({state_path})"
            )
    except (OSError, ValueError) as exc:
        problem = PartialProblem(f"{part_path} has an unreadable state file ({exc})")
    else:
        try:
            partial = _partial_from_state(out_path, state)
        except (KeyError, TypeError, ValueError) as exc:
            problem = PartialProblem(f"{part_path} has an invalid state file ({exc})")
        else:
            if held < partial.verified:
                held = max(held, 0)
                problem = PartialProblem(
                    f"{part_path} is damaged at byte {held}: it ends there, but its state "
                    f"file promises {partial.verified} checked bytes",
                    held,
                )
    if problem is not None:
        if not force:
            return problem
        partial = None
    if partial is None:
        unlink_quietly(part_path, state_path, out_path + ".part.digests")
        return None
    partial.reopen()
    return partial


def _partial_from_state(out_path: str, state: dict[str, Any]) -> PartFile:
    if state.get("format") != STATE_FORMAT:
        raise ValueError("not an atartape transfer state")
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"version {state.get('version')!r}, this receiver reads {STATE_VERSION}")
    values = {key: state[key] for key in ("total_size", "segment_size", "segments", "verified")}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values.values()):
        raise ValueError("sizes must be non-negative integers")
    if not isinstance(state["fingerprint"], str) or values["segment_size"] < 1:
        raise ValueError("bad fingerprint or segment size")
    if not isinstance(state["identity"], str):
        raise ValueError("bad identity")
    partial = PartFile(
        out_path,
        state["fingerprint"],
        state["identity"],
        values["total_size"],
        values["segment_size"],
        segments=values["segments"],
        chain=bytes.fromhex(state["chain"]),
    )
    if partial.segments > partial.count or partial.verified != values["verified"]:
        raise ValueError("the verified length does not match the segments")
    return partial
