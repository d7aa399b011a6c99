"""Send a tape over TCP and receive it, resuming at the byte where a connection dropped.

The receiver listens (:func:`receive`), the sender connects (:func:`send`); both run on anyio,
so on asyncio (with or without uvloop) and on trio. There is no authentication or encryption:
use it on a trusted network, or through an SSH tunnel.

The package is laid out by concern: the wire format is pure (:mod:`atartape.format.wire`);
:mod:`~atartape.transfer.connection` moves frames over a connection, :mod:`~.partfile` keeps the
receiver's partial file and its state, :mod:`~.sender` and :mod:`~.receiver` run each side.

Resuming
    The receiver writes ``OUT.part`` and keeps, beside it, a small state file ``OUT.part.state``
    (JSON, replaced atomically: write a temporary file, fsync, rename). On every connection the
    receiver says which tape it holds part of (its fingerprint, or none) and how many bytes; the
    sender states its tape's fingerprint and total size. If the receiver holds part of another
    tape it refuses (:class:`TransferRefusedError` on both sides) and changes nothing, unless it
    was started with ``force=True``, which discards the partial file. Otherwise it answers with
    the offset to continue from, and the sender plays the tape from there: the layout of a tape
    is fixed, so the byte at any offset is the same in every play.

Framing
    Every frame carries a CRC-32 (see :mod:`atartape.format.wire`). The receiver appends the
    bytes of a ``DATA`` frame only once the whole frame has arrived and its CRC matched; a frame
    cut by a
    dropped connection, or damaged, is never written. When a connection drops, the sender
    reconnects with exponential backoff (``retries`` consecutive failures at most, ``backoff``
    seconds doubling up to ``max_backoff``) and the receiver, still running, continues at the
    exact byte it holds.

Segments, checkpoints and the end-to-end digest
    The stream is cut into segments of ``segment_size`` bytes (64 MiB by default; chosen by the
    receiver and kept in its state). After the last byte of each segment the sender sends the
    SHA-256 of that segment as it read it; the receiver compares it with the SHA-256 of the
    bytes it wrote. On a match it fsyncs ``OUT.part`` and records the checkpoint (verified
    length, and the chain value below) in the state file; on a mismatch it cuts ``OUT.part``
    back to the previous checkpoint and both sides fail with :class:`TransferIntegrityError`.
    So every byte at or before a checkpoint has been checked end to end against the sender's
    own reading of the source. A receiver that restarts (a new process) resumes at its last
    checkpoint: bytes past it were never checked, so they are received again.

    The digest of the whole tape is a hash chain over the segment digests::

        c0 = sha256(protocol name, total size, segment size)
        c(i+1) = sha256(c(i) || sha256(segment i))        digest = c(n), as hex

    Unlike a plain SHA-256 of the whole stream, a chain can be computed from segments hashed in
    any order and at any time, which makes resuming cheap on both sides:

    - The receiver hashes what it appends, and keeps the chain of its verified segments in its
      state. When it restarts it re-reads and re-hashes the prefix it already holds, in worker
      threads, in the background while new bytes arrive (``verify_existing``): if the file no
      longer matches its state it stops, and sets the state file aside (``.bad``) so that only
      ``force`` can discard the file.
    - The sender hashes every segment it streams. After a reconnect it plays from the start of
      the receiver's current segment (at most one segment, read locally again) so that it can
      hash the whole segment while sending only the missing bytes. A sender that starts while
      the receiver already holds a prefix (a new sender process) did not stream that prefix:
      with ``verify_prefix`` (the default) it reads and hashes the prefix from the source in a
      background task while the rest of the tape streams; with ``verify_prefix=False`` it
      takes the receiver's chain value for the prefix on trust (the receiver checked each of
      those segments against a sender's digest when it received them).

    At the end the sender sends ``END``; the receiver answers ``DONE`` with its size and chain;
    the sender compares both with its own and answers ``VERDICT``; the receiver compares the
    sender's chain with its own, fsyncs, renames ``OUT.part`` to ``OUT``, removes the state file
    and answers ``FINISHED``; the sender acknowledges with ``BYE``. While one side is still
    verifying a prefix it sends ``PING`` frames so the other side's idle timeout does not fire.
    If the connection drops between ``FINISHED`` and ``BYE``, the receiver lingers (``linger``
    seconds) and answers a reconnecting sender's offer with ``FINISHED`` at once, so both sides
    learn that the transfer completed.
"""

from __future__ import annotations

from ..errors import (
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
    TransferRefusedError,
)
from .connection import DEFAULT_SEGMENT_SIZE, ProgressCallback, ReceiveResult, SendResult
from .receiver import receive
from .sender import send

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ProgressCallback",
    "ReceiveResult",
    "SendResult",
    "TransferError",
    "TransferIntegrityError",
    "TransferProtocolError",
    "TransferRefusedError",
    "receive",
    "send",
]
