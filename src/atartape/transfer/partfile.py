"""The receiver's partial file ``OUT.part`` and its state file; every method touches the disk
and runs in a worker thread."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .._engine.files import fsync_folder, unlink_quietly, write_atomically
from ..errors import TransferIntegrityError, TransferProtocolError, TransferRefusedError
from ..format.wire import chain_next, chain_seed, segment_count, segment_end

STATE_FORMAT = "atartape-transfer-state"
STATE_VERSION = 1


class PartFile:
    """``OUT.part`` and its state: the verified prefix, the segment being received, the chain."""

    def __init__(
        self,
        out_path: str,
        fingerprint: str,
        total_size: int,
        segment_size: int,
        *,
        segments: int = 0,
        chain: bytes | None = None,
    ) -> None:
        self.out_path = out_path
        self.part_path = out_path + ".part"
        self.state_path = out_path + ".part.state"
        self.fingerprint = fingerprint
        self.total_size = total_size
        self.segment_size = segment_size
        self.segments = segments  # verified (checkpointed) segments
        self.chain = chain if chain is not None else chain_seed(total_size, segment_size)
        self.length = self.verified  # bytes held; those past `verified` are being checked
        self.hasher = hashlib.sha256()  # of the bytes [verified, length)
        self.fd: int | None = None

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
        self._write_state()
        self.fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def reopen(self) -> None:
        """Open the file of an earlier run, to continue at its last checkpoint.

        Bytes past the checkpoint were never checked: they are overwritten as the transfer
        goes on, and cut off when it completes, but left alone until then (a refused sender
        changes nothing).
        """
        self.fd = os.open(self.part_path, os.O_RDWR)
        self.length = self.verified

    def append(self, data: memoryview) -> None:
        assert self.fd is not None
        written = 0
        while written < len(data):
            written += os.pwrite(self.fd, data[written:], self.length + written)
        self.hasher.update(data)
        self.length += len(data)

    def seal(self, index: int, digest: bytes) -> None:
        """Check the segment just received against the sender's digest, then checkpoint.

        Raises :class:`TransferProtocolError` if the segment is not complete, and
        :class:`TransferIntegrityError` (after cutting the file back) if the digest differs.
        """
        if index != self.segments or self.length != self.bound or index >= self.count:
            raise TransferProtocolError(
                f"SEGMENT {index} out of place (holding {self.length} bytes)"
            )
        ours = self.hasher.digest()
        self.hasher = hashlib.sha256()
        if ours != digest:
            assert self.fd is not None
            os.ftruncate(self.fd, self.verified)
            self.length = self.verified
            raise TransferIntegrityError(
                f"segment {index} (bytes {self.verified} to {self.bound}) of "
                f"{self.part_path} does not match the sender's digest; it was cut off"
            )
        assert self.fd is not None
        os.fsync(self.fd)
        self.chain = chain_next(self.chain, digest)
        self.segments += 1
        self._write_state()

    def finalize(self) -> None:
        """fsync, rename ``OUT.part`` to ``OUT``, then remove the state file."""
        assert self.fd is not None
        os.ftruncate(self.fd, self.length)
        os.fsync(self.fd)
        self.close()
        os.replace(self.part_path, self.out_path)
        fsync_folder(os.path.dirname(os.path.abspath(self.out_path)))
        unlink_quietly(self.state_path)

    def discard(self) -> None:
        self.close()
        unlink_quietly(self.part_path)
        unlink_quietly(self.state_path)

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def _write_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "total_size": self.total_size,
            "segment_size": self.segment_size,
            "segments": self.segments,
            "verified": self.verified,
            "chain": self.chain.hex(),
        }
        write_atomically(self.state_path, json.dumps(state).encode())


def load_partial(out_path: str, force: bool) -> PartFile | None:
    """In a worker thread: what an earlier run left, opened to continue at its last checkpoint.

    Raises :class:`TransferRefusedError` when ``OUT`` exists, or when ``OUT.part`` cannot be
    trusted (no or unreadable state, shorter than its state says), unless ``force``: then
    ``OUT.part`` is discarded (and ``OUT`` will be replaced).
    """
    part_path, state_path = out_path + ".part", out_path + ".part.state"
    if os.path.exists(out_path) and not force:
        raise TransferRefusedError(f"{out_path} already exists (force replaces it)")
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise TransferRefusedError(f"the folder {parent} does not exist")
    try:
        held = os.path.getsize(part_path)
    except FileNotFoundError:
        held = -1
    problem: str | None = None
    partial: PartFile | None = None
    try:
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        if held > 0:
            problem = f"{part_path} holds {held} bytes but has no state file ({state_path})"
    except (OSError, ValueError) as exc:
        problem = f"the state file {state_path} is unreadable ({exc})"
    else:
        try:
            partial = _partial_from_state(out_path, state)
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"the state file {state_path} is invalid ({exc})"
        else:
            if held < partial.verified:
                problem = (
                    f"{part_path} holds {max(held, 0)} bytes but its state file promises "
                    f"{partial.verified}"
                )
    if problem is not None:
        if not force:
            raise TransferRefusedError(
                f"{problem}; it cannot be resumed. Pass force (--force) to discard it"
            )
        partial = None
    if partial is None:
        unlink_quietly(part_path)
        unlink_quietly(state_path)
        return None
    partial.reopen()
    return partial


def _partial_from_state(out_path: str, state: dict[str, Any]) -> PartFile:
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ValueError("not an atartape transfer state of a known version")
    values = {key: state[key] for key in ("total_size", "segment_size", "segments", "verified")}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values.values()):
        raise ValueError("sizes must be non-negative integers")
    if not isinstance(state["fingerprint"], str) or values["segment_size"] < 1:
        raise ValueError("bad fingerprint or segment size")
    partial = PartFile(
        out_path,
        state["fingerprint"],
        values["total_size"],
        values["segment_size"],
        segments=values["segments"],
        chain=bytes.fromhex(state["chain"]),
    )
    if partial.segments > partial.count or partial.verified != values["verified"]:
        raise ValueError("the verified length does not match the segments")
    return partial
