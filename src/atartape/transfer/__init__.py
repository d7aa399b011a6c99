"""Send a tape over the network and receive it, resuming at the byte where a connection dropped.

The receiver listens (:func:`receive`), the sender connects (:func:`send`); both run on anyio,
so on asyncio (with or without uvloop) and on trio. By default the connection is TLS 1.3 and
both sides prove that they know a one-time code the receiver printed (:func:`new_code`),
before any byte of the tape moves: nobody else can write through the receiver, and nobody in
the middle can read the bytes or pose as the receiver. ``insecure=True`` on both sides sends
over plain TCP without a code, for trusted networks only. :mod:`~atartape.transfer.security`
says exactly what the code protects and what it does not.

The package is laid out by concern: the wire format is pure (:mod:`atartape.format.wire`);
:mod:`~atartape.transfer.security` opens a connection (preamble, TLS, the code),
:mod:`~atartape.transfer.connection` moves frames over it (every read and send bounded by the
idle timeout), :mod:`~.segments` hashes segments, :mod:`~.partfile` keeps the receiver's
partial file and its state, :mod:`~.sender` and :mod:`~.receiver` run each side.

Resuming
    The receiver writes ``OUT.part`` and keeps, beside it, a small state file ``OUT.part.state``
    (JSON, replaced atomically: write a temporary file, fsync, rename; a receiver that starts
    removes the temporary files of one that was killed) and the code, ``OUT.part.code``. On every
    connection the sender offers its tape: fingerprint, recording identity (``tape.identity``) and
    total size, and the state file records the ones the partial file belongs to. If the receiver
    holds part of another tape, or of another recording of it (the folder was recorded again), the
    first such offer is refused (:class:`TransferRefusedError` on both sides, see Refusals) and
    nothing changes,
    unless the receiver was started with ``force=True``, which discards the partial file. Once a
    receiver has taken a sender, it keeps to that tape: a sender of another one is refused and the
    transfer in progress goes on. Otherwise the receiver answers with the offset to continue from,
    and the sender plays the tape from there: the layout of a tape is fixed, so the byte at any
    offset is the same in every play. The sender's player is pinned to the recording it was opened
    with: if the index is recorded again meanwhile, the sender stops with
    :class:`~atartape.TapeChangedError` (and tells the receiver), without retrying.

Framing
    Every frame carries a CRC-32 (see :mod:`atartape.format.wire`). The receiver appends the bytes
    of a ``DATA`` frame only once the whole frame has arrived and its CRC matched; a frame cut by a
    dropped connection, or damaged, is never written (over TLS, a damaged record already breaks the
    connection). When a connection drops, or stays silent for ``idle_timeout`` seconds either way
    (every read and every send is bounded), the sender reconnects with exponential backoff
    (``retries`` consecutive failures at most, ``backoff`` seconds doubling up to ``max_backoff``)
    and the receiver, still running, continues at the exact byte it holds. A peer that is not an
    atartape receiver, a refused code or tape, a source that changed, a receiver that cannot write
    (its ``ERROR`` frame stops the sender at once): none of these is retried.

Refusals
    A receiver that refuses a sender tells it why before it closes: a refusal is an ``ERROR``
    frame with a reason and one line of text (:func:`atartape.format.wire.encode_refusal`),
    and the sender stops at once, without retrying, with a :class:`TransferRefusedError`
    whose ``reason`` is the receiver's and whose message is ``the receiver refused: <text>``
    (the CLI: that line, exit 2). The reasons:

    - ``wrong-code``: the sender's proof of the code is wrong. The receiver says nothing else
      (not what it holds), and goes on waiting for the right sender. This refusal comes before
      the receiver has proven anything (it cannot, to a sender whose code differs), so the
      sender believes no other reason at that point and shows its own words, never the peer's:
      a man in the middle can make it stop (as he can by cutting the line), not make it say
      what he wants, nor succeed.
    - ``damaged-partial``: ``OUT.part`` cannot be resumed: it no longer holds what was checked
      (``offset``: the first byte of the first segment that differs, or where the file ends
      short of its checkpoint), or its state file is missing or unreadable. Found when the
      receiver starts (it listens anyway, and logs it) or while it re-reads the file; the
      first sender of that tape is told, then the receiver stops with the same reason.
    - ``another-recording`` / ``another-tape``: ``OUT.part`` holds part of another recording
      of the tape, or of another tape; the receiver stops too.
    - ``busy``: this receiver took a sender of another tape; ``completed``: ``OUT`` was just
      completed with another tape. The receiver goes on.

    Every refusal but ``wrong-code`` comes after both sides proved the code, inside TLS: it
    cannot be forged, nor changed into anything else. Nothing on disk changes on a refusal
    (``OUT.part``, its state and digests stay byte for byte); ``force=True`` (``--force``)
    discards what is in the way instead. The receiver stops with a
    :class:`TransferRefusedError` of the same ``reason`` (the CLI: exit 2, one line ending
    "the sender at HOST:PORT was told"). A peer of an older version reads these refusals as
    plain ``ERROR`` refusals (it shows the text and exits 2); a refusal from one without a
    reason reads as ``other``.

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
      state (and each segment's digest in ``OUT.part.digests``, a hint checked against that
      chain). When it restarts it re-reads and re-hashes the prefix it already holds, in worker
      threads, as soon as it starts (``verify_existing``), and a sender of that tape gets its
      ``START`` only once that check is done (``PING`` frames meanwhile): nothing is appended
      to a file that was not proven. If the file no longer matches its state, the sender is
      refused with the first damaged byte (see Refusals) and nothing changes on disk.
    - The sender hashes every segment it streams. After a reconnect it plays from the start of
      the receiver's current segment (at most one segment, read locally again) so that it can
      hash the whole segment while sending only the missing bytes. A sender that starts while
      the receiver already holds a prefix (a new sender process) did not stream that prefix:
      with ``verify_prefix`` (the default) it reads and hashes the prefix from the source, and
      compares its chain with the one the receiver stated in ``START``, before it sends any
      new byte (``PING`` frames meanwhile): a prefix that is not this tape's (or a source that
      broke its promise in it) stops the transfer with nothing more sent. The price: a resumed
      send reads the prefix before it streams, instead of while it streams. With
      ``verify_prefix=False`` it takes the receiver's chain value for the prefix on trust (the
      receiver checked each of those segments against a sender's digest when it received them)
      and streams at once.

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
from .security import new_code, saved_code
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
    "new_code",
    "receive",
    "saved_code",
    "send",
]
