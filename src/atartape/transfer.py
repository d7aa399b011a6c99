"""Send a tape over TCP and receive it, resuming at the byte where a connection dropped.

The receiver listens (:func:`receive`), the sender connects (:func:`send`); both run on anyio,
so on asyncio (with or without uvloop) and on trio. There is no authentication or encryption:
use it on a trusted network, or through an SSH tunnel.

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
    Every frame carries a CRC-32 (see :mod:`atartape._wire`). The receiver appends the bytes of
    a ``DATA`` frame only once the whole frame has arrived and its CRC matched; a frame cut by a
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

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, SocketAttribute, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from ._errors import TarIntegrityError, TarTapeError
from ._wire import (
    PROTOCOL,
    Kind,
    ProtocolError,
    TransferError,
    TransferIntegrityError,
    TransferRefusedError,
    chain_next,
    chain_of,
    chain_seed,
    decode_data,
    decode_message,
    encode_data,
    encode_frame,
    get_int,
    get_str,
    read_frame,
    segment_count,
    segment_end,
    send_message,
)
from .player import TapePlayer
from .tape import Tape

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ProgressCallback",
    "ReceiveResult",
    "SendResult",
    "TransferError",
    "TransferIntegrityError",
    "TransferRefusedError",
    "receive",
    "send",
]

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
FRAME_DATA = 1024 * 1024  # the most data bytes in one DATA frame
STATE_FORMAT = "atartape-transfer-state"
STATE_VERSION = 1

ProgressCallback = Callable[[int, int], object]
"""Called as ``progress(position, total_size)`` after each frame: bytes held by the receiver."""

log = logging.getLogger("atartape.transfer")

# A connection that fails in one of these ways is dropped and (by the sender) re-established.
_DROPS = (
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ProtocolError,
    OSError,  # includes TimeoutError: an idle timeout
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class SendResult:
    """What :func:`send` did.

    ``resumed_from`` is the offset the receiver held when first contacted (0 for a fresh
    transfer), ``bytes_sent`` the data bytes this call sent (over every connection),
    ``connections`` how many connections it took and ``digest`` the end-to-end chain digest.
    """

    fingerprint: str
    total_size: int
    bytes_sent: int
    resumed_from: int
    connections: int
    digest: str


@dataclass(frozen=True)
class ReceiveResult:
    """What :func:`receive` did.

    ``path`` is the complete file; ``resumed_from`` the bytes of ``OUT.part`` kept from an
    earlier run; ``bytes_received`` the data bytes this call received; ``connections`` the
    sessions it served; ``digest`` the end-to-end chain digest, agreed with the sender.
    """

    path: str
    fingerprint: str
    total_size: int
    bytes_received: int
    resumed_from: int
    connections: int
    digest: str


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _expect(
    rx: BufferedByteReceiveStream, kind: Kind, idle_timeout: float, peer: str
) -> dict[str, Any]:
    """Read control frames until one of ``kind`` (skipping ``PING``); an ``ERROR`` raises.

    See :func:`_expect_any`.
    """
    return (await _expect_any(rx, (kind,), idle_timeout, peer))[1]


async def _expect_any(
    rx: BufferedByteReceiveStream, kinds: tuple[Kind, ...], idle_timeout: float, peer: str
) -> tuple[Kind, dict[str, Any]]:
    """Read control frames until one of ``kinds`` (skipping ``PING``); an ``ERROR`` raises.

    ``ERROR`` with code ``refused`` raises :class:`TransferRefusedError`, ``integrity``
    :class:`TransferIntegrityError`, any other code :class:`TransferError`. Another kind of
    frame is a :class:`ProtocolError`; silence longer than ``idle_timeout`` a ``TimeoutError``.
    """
    while True:
        with anyio.fail_after(idle_timeout):
            got, payload = await read_frame(rx)
        if got is Kind.PING:
            continue
        if got is Kind.ERROR:
            raise _peer_error(decode_message(got, payload), peer)
        if got not in kinds:
            names = " or ".join(kind.name for kind in kinds)
            raise ProtocolError(f"expected {names} from the {peer}, got {got.name}")
        return got, decode_message(got, payload)


def _peer_error(message: dict[str, Any], peer: str) -> TransferError:
    code = message.get("code")
    text = f"the {peer} stopped the transfer: {message.get('message', 'no reason given')}"
    if code == "refused":
        return TransferRefusedError(text)
    if code == "integrity":
        return TransferIntegrityError(text)
    return TransferError(text)


async def _send_error(stream: ByteStream, code: str, message: str) -> None:
    """Tell the peer why the session stops, if the connection still works (best effort)."""
    with anyio.move_on_after(5, shield=True), suppress(*_DROPS):
        await send_message(stream, Kind.ERROR, code=code, message=message)


async def _wait_pinging(stream: ByteStream, event: anyio.Event, idle_timeout: float) -> None:
    """Wait for ``event``, sending ``PING`` frames so that the peer's idle timeout stays off."""
    interval = max(idle_timeout / 3, 0.05)
    while not event.is_set():
        with anyio.move_on_after(interval):
            await event.wait()
        if not event.is_set():
            await stream.send(encode_frame(Kind.PING, b""))


def _hash_and_frame(hasher: Any, piece: memoryview, offset: int, skip: int) -> bytes | None:
    """In a worker thread: hash ``piece``, and frame its bytes from ``skip`` on (if any)."""
    hasher.update(piece)
    if skip >= len(piece):
        return None
    return encode_data(offset + skip, bytes(piece[skip:]))


# --------------------------------------------------------------------------------------------
# Sending


class _Sender:
    def __init__(
        self,
        tape: Tape,
        source_root: str | None,
        host: str,
        port: int,
        *,
        retries: int,
        backoff: float,
        max_backoff: float,
        connect_timeout: float,
        idle_timeout: float,
        verify_prefix: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.tape = tape
        self.source_root = source_root
        self.host = host
        self.port = port
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.verify_prefix = verify_prefix
        self.progress = progress
        self.segment_size = 0
        self.digests: dict[int, bytes] = {}  # segment index -> sha256, as read by this sender
        self.trusted: dict[int, bytes] = {}  # segments -> receiver's chain value (no prefix check)
        self.hash_jobs: list[anyio.Event] = []
        self.hash_error: BaseException | None = None
        self.bytes_sent = 0
        self.connections = 0
        self.resumed_from: int | None = None
        self.agreed_chain: str | None = None
        self.task_group: TaskGroup | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _player(self) -> TapePlayer:
        return TapePlayer(self.tape, self.source_root, md5=False)

    async def run(self) -> SendResult:
        failure: Exception | None = None
        result: SendResult | None = None
        async with anyio.create_task_group() as tg:
            self.task_group = tg
            try:
                result = await self._loop()
            except Exception as exc:  # re-raised below, outside the task group (no group)
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        assert result is not None
        return result

    def _delay(self, attempts: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))

    async def _wait_to_retry(self, attempts: int, failure: str, retrying: str) -> None:
        """Give up after ``retries`` failed attempts in a row, else back off and return."""
        if attempts > self.retries:
            raise TransferError(
                f"{failure}; gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
            ) from None
        delay = self._delay(attempts)
        log.info("%s; %s in %.2g s", failure, retrying, delay)
        await anyio.sleep(delay)

    async def _loop(self) -> SendResult:
        attempts = 0
        while True:
            try:
                with anyio.fail_after(self.connect_timeout):
                    stream = await anyio.connect_tcp(self.host, self.port)
            except OSError as exc:
                attempts += 1
                failure = f"cannot reach the receiver at {self.where} ({_describe(exc)})"
                await self._wait_to_retry(attempts, failure, "retrying")
                continue
            self.connections += 1
            sent_before = self.bytes_sent
            try:
                async with stream:
                    return await self._session(stream)
            except _DROPS as exc:
                if self.bytes_sent > sent_before:
                    attempts = 0  # that connection made progress: a new outage begins
                attempts += 1
                failure = f"the connection to {self.where} was lost ({_describe(exc)})"
                await self._wait_to_retry(attempts, failure, "resuming")

    async def _session(self, stream: ByteStream) -> SendResult:
        rx = BufferedByteReceiveStream(stream)
        hello = await _expect(rx, Kind.HELLO, self.idle_timeout, "receiver")
        if hello.get("protocol") != PROTOCOL:
            raise TransferError(f"{self.where} speaks {hello.get('protocol')!r}, not {PROTOCOL!r}")
        tape = self.tape
        await send_message(
            stream,
            Kind.OFFER,
            protocol=PROTOCOL,
            fingerprint=tape.fingerprint,
            total_size=tape.total_size,
            name=tape.name,
        )
        kind, start = await _expect_any(
            rx, (Kind.START, Kind.FINISHED), self.idle_timeout, "receiver"
        )
        if kind is Kind.FINISHED:  # it completed, but its FINISHED was lost: we reconnected
            return await self._finished(stream, start)
        offset, segment = self._check_start(start)
        if self.resumed_from is None:
            self.resumed_from = offset
            if offset:
                log.info("the receiver holds %d bytes; resuming there", offset)
        missing = any(i not in self.digests for i in range(segment))
        if missing and self.verify_prefix:
            self._start_hashing(0, segment)
        try:
            return await self._stream_and_finish(stream, rx, offset, segment)
        except ProtocolError:
            raise
        except TarTapeError as exc:
            # This side stops for good (the source changed or is gone, a digest differs):
            # tell the receiver, so that it stops too instead of waiting for a reconnect.
            integrity = isinstance(exc, (TransferIntegrityError, TarIntegrityError))
            await _send_error(stream, "integrity" if integrity else "source", str(exc))
            raise

    async def _stream_and_finish(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, offset: int, segment: int
    ) -> SendResult:
        tape = self.tape
        await self._stream(stream, offset, segment)
        await stream.send(encode_frame(Kind.END, b"{}"))
        done = await _expect(rx, Kind.DONE, self.idle_timeout, "receiver")
        their_size = get_int(done, "total_size")
        their_chain = get_str(done, "chain")
        chain = (await self._final_chain(stream)).hex()
        ok = their_size == tape.total_size and their_chain == chain
        await send_message(stream, Kind.VERDICT, ok=ok, chain=chain)
        if not ok:
            raise TransferIntegrityError(
                f"the receiver at {self.where} holds {their_size} bytes with digest "
                f"{their_chain}, the tape has {tape.total_size} bytes with digest {chain}"
            )
        self.agreed_chain = chain
        finished = await _expect(rx, Kind.FINISHED, self.idle_timeout, "receiver")
        return await self._finished(stream, finished)

    async def _finished(self, stream: ByteStream, finished: dict[str, Any]) -> SendResult:
        """The receiver has the tape in place: say goodbye (best effort) and report."""
        digest = self.agreed_chain or get_str(finished, "digest") or ""
        with anyio.move_on_after(5), suppress(*_DROPS):
            await stream.send(encode_frame(Kind.BYE, b"{}"))
        return SendResult(
            fingerprint=self.tape.fingerprint,
            total_size=self.tape.total_size,
            bytes_sent=self.bytes_sent,
            resumed_from=self.resumed_from or 0,
            connections=self.connections,
            digest=digest,
        )

    def _check_start(self, start: dict[str, Any]) -> tuple[int, int]:
        total = self.tape.total_size
        offset = get_int(start, "offset")
        segment = get_int(start, "segment")
        segment_size = get_int(start, "segment_size", minimum=1)
        chain = get_str(start, "chain")
        if segment_size != self.segment_size:
            self.segment_size = segment_size
            self.digests.clear()
            self.trusted.clear()
        count = segment_count(total, segment_size)
        if not (
            segment <= count
            and min(segment * segment_size, total) <= offset <= total
            and (segment == count or offset <= segment_end(segment, total, segment_size))
        ):
            raise ProtocolError(f"START offset {offset} / segment {segment} is inconsistent")
        try:
            self.trusted[segment] = bytes.fromhex(chain or "")
        except ValueError:
            raise ProtocolError(f"START chain {chain!r} is not hex") from None
        return offset, segment

    async def _stream(self, stream: ByteStream, offset: int, segment: int) -> None:
        """Play from the start of ``segment``, hash every byte, send those from ``offset``."""
        total, size = self.tape.total_size, self.segment_size
        if self.progress is not None:
            self.progress(offset, total)
        position = segment * size
        if position >= total:
            return
        index = segment
        bound = segment_end(index, total, size)
        hasher = hashlib.sha256()
        async with aclosing(self._player().stream(position)) as chunks:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except OSError as exc:  # the disk, not the network: do not retry
                    raise TransferError(f"cannot read the source: {_describe(exc)}") from exc
                view = memoryview(chunk)
                while view:
                    take = min(len(view), bound - position, FRAME_DATA)
                    skip = max(0, offset - position)
                    frame = await anyio.to_thread.run_sync(
                        _hash_and_frame, hasher, view[:take], position, skip
                    )
                    if frame is not None:
                        await stream.send(frame)
                        self.bytes_sent += take - skip
                        if self.progress is not None:
                            self.progress(position + take, total)
                    position += take
                    view = view[take:]
                    if position == bound:
                        digest = hasher.digest()
                        self._record_digest(index, digest)
                        await send_message(stream, Kind.SEGMENT, index=index, sha256=digest.hex())
                        index += 1
                        bound = segment_end(index, total, size)
                        hasher = hashlib.sha256()

    def _record_digest(self, index: int, digest: bytes) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise TransferIntegrityError(
                f"segment {index} of tape {self.tape.name!r} read differently twice: "
                "the source changed while it was being sent"
            )

    def _start_hashing(self, first: int, stop: int) -> None:
        assert self.task_group is not None
        done = anyio.Event()
        self.hash_jobs.append(done)
        self.task_group.start_soon(self._hash_segments, first, stop, done)

    async def _hash_segments(self, first: int, stop: int, done: anyio.Event) -> None:
        """Read segments ``[first, stop)`` from the source and record their digests."""
        total, size = self.tape.total_size, self.segment_size
        try:
            position = first * size
            index = first
            bound = segment_end(index, total, size)
            hasher = hashlib.sha256()
            end = segment_end(stop - 1, total, size)
            async with aclosing(self._player().stream(position, end)) as chunks:
                async for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        take = min(len(view), bound - position)
                        await anyio.to_thread.run_sync(hasher.update, view[:take])
                        position += take
                        view = view[take:]
                        if position == bound:
                            self._record_digest(index, hasher.digest())
                            index += 1
                            bound = segment_end(index, total, size)
                            hasher = hashlib.sha256()
        except Exception as exc:  # reported by _final_chain
            self.hash_error = exc
        finally:
            done.set()

    async def _final_chain(self, stream: ByteStream) -> bytes:
        """The sender's chain digest of the whole tape; waits for background hashing."""
        total, size = self.tape.total_size, self.segment_size
        count = segment_count(total, size)
        for _ in range(2):
            for job in list(self.hash_jobs):
                await _wait_pinging(stream, job, self.idle_timeout)
            if self.hash_error is not None:
                raise self.hash_error
            first = count
            while first > 0 and first - 1 in self.digests:
                first -= 1
            if first == 0:
                return chain_of([self.digests[i] for i in range(count)], total, size)
            if not self.verify_prefix:
                trusted = sorted(j for j in self.trusted if j >= first)
                if trusted:
                    chain = self.trusted[trusted[0]]
                    for i in range(trusted[0], count):
                        chain = chain_next(chain, self.digests[i])
                    return chain
            self._start_hashing(0, first)
        raise TransferError("could not hash every segment of the tape")  # pragma: no cover


async def send(
    tape: Tape,
    source_root: str | os.PathLike[str] | None,
    host: str,
    port: int,
    *,
    retries: int = 10,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    connect_timeout: float = 30.0,
    idle_timeout: float = 60.0,
    verify_prefix: bool = True,
    progress: ProgressCallback | None = None,
) -> SendResult:
    """Send ``tape`` (read from ``source_root``, by default where it was recorded) to a receiver.

    Connects to ``host:port``, streams from the offset the receiver holds, and reconnects after
    a dropped connection (or while the receiver is not yet listening) with exponential backoff:
    ``backoff`` seconds, doubling up to ``max_backoff``, at most ``retries`` consecutive failed
    attempts (a connection that moved bytes resets the count). ``idle_timeout`` bounds the
    silence of a connection before it is treated as dropped. ``verify_prefix``: see the module
    documentation. Returns once the receiver has the whole tape, checked and renamed into place.

    Raises :class:`TransferError` when the receiver stays unreachable, or stops;
    :class:`TransferRefusedError` when it holds part of another tape;
    :class:`TransferIntegrityError` when a digest differs; and, from the source,
    :class:`~atartape.TarIntegrityError` or :class:`~atartape.SourceNotFoundError`.
    """
    if retries < 0 or backoff < 0 or max_backoff < 0:
        raise ValueError("retries, backoff and max_backoff must not be negative")
    if connect_timeout <= 0 or idle_timeout <= 0:
        raise ValueError("connect_timeout and idle_timeout must be positive")
    sender = _Sender(
        tape,
        os.fspath(source_root) if source_root is not None else None,
        host,
        port,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        verify_prefix=verify_prefix,
        progress=progress,
    )
    return await sender.run()


# --------------------------------------------------------------------------------------------
# Receiving: _PartFile's methods run in worker threads.


class _PartFile:
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

        Raises :class:`ProtocolError` if the segment is not complete, and
        :class:`TransferIntegrityError` (after cutting the file back) if the digest differs.
        """
        if index != self.segments or self.length != self.bound or index >= self.count:
            raise ProtocolError(f"SEGMENT {index} out of place (holding {self.length} bytes)")
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
        _fsync_dir(self.out_path)
        _unlink(self.state_path)

    def discard(self) -> None:
        self.close()
        _unlink(self.part_path)
        _unlink(self.state_path)

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
        temp = f"{self.state_path}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as handle:
                json.dump(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.state_path)
        finally:
            _unlink(temp)
        _fsync_dir(self.state_path)


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: str) -> None:
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _load_partial(out_path: str, force: bool) -> _PartFile | None:
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
    partial: _PartFile | None = None
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
        _unlink(part_path)
        _unlink(state_path)
        return None
    partial.reopen()
    return partial


def _partial_from_state(out_path: str, state: dict[str, Any]) -> _PartFile:
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ValueError("not an atartape transfer state of a known version")
    values = {key: state[key] for key in ("total_size", "segment_size", "segments", "verified")}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values.values()):
        raise ValueError("sizes must be non-negative integers")
    if not isinstance(state["fingerprint"], str) or values["segment_size"] < 1:
        raise ValueError("bad fingerprint or segment size")
    partial = _PartFile(
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


def _hash_file_range(fd: int, start: int, end: int) -> bytes:
    hasher = hashlib.sha256()
    position = start
    while position < end:
        data = os.pread(fd, min(FRAME_DATA * 4, end - position), position)
        if not data:
            raise OSError(f"unexpected end of file at byte {position}")
        hasher.update(data)
        position += len(data)
    return hasher.digest()


class _Receiver:
    def __init__(
        self,
        out_path: str,
        host: str,
        port: int,
        *,
        force: bool,
        segment_size: int,
        idle_timeout: float,
        verify_existing: bool,
        linger: float,
        progress: ProgressCallback | None,
        on_listening: Callable[[str, int], object] | None,
    ) -> None:
        self.out_path = out_path
        self.linger = linger
        self.host = host
        self.port = port
        self.force = force
        self.segment_size = segment_size
        self.idle_timeout = idle_timeout
        self.verify_existing = verify_existing
        self.progress = progress
        self.on_listening = on_listening
        self.file: _PartFile | None = None
        self.lock = anyio.Lock()
        self.active: anyio.CancelScope | None = None
        self.finished = anyio.Event()
        self.fatal: Exception | None = None
        self.result: ReceiveResult | None = None  # set once the file is in place
        self.task_group: TaskGroup | None = None
        self.rehash_done = anyio.Event()
        self.rehash_scope: anyio.CancelScope | None = None
        self.state_is_bad = False
        self.resumed_from = 0
        self.bytes_received = 0
        self.connections = 0

    async def _disk(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run file work in a worker thread; a failing disk stops the transfer for good."""
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except OSError as exc:
            raise TransferError(f"disk error on {self.out_path}.part: {_describe(exc)}") from exc

    def _fail(self, exc: Exception) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.finished.set()

    async def run(self) -> ReceiveResult:
        self.file = await anyio.to_thread.run_sync(_load_partial, self.out_path, self.force)
        if self.file is not None:
            self.resumed_from = self.file.length
            log.info("resuming %s.part at byte %d", self.out_path, self.file.length)
        try:
            try:
                listener = await anyio.create_tcp_listener(
                    local_host=self.host, local_port=self.port
                )
            except OSError as exc:
                where = f"{self.host}:{self.port}"
                raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
            async with listener:
                port = listener.extra(SocketAttribute.local_port)
                if self.on_listening is not None:
                    self.on_listening(self.host, port)
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    if self.file is not None and self.file.segments and self.verify_existing:
                        tg.start_soon(self._rehash, self.file)
                    else:
                        self.rehash_done.set()
                    tg.start_soon(listener.serve, self._handle)
                    await self.finished.wait()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self.file is not None:
                    await anyio.to_thread.run_sync(self.file.close)
                if self.state_is_bad and self.file is not None:
                    state = self.file.state_path
                    await anyio.to_thread.run_sync(os.replace, state, state + ".bad")
        if self.fatal is not None:
            raise self.fatal
        assert self.result is not None
        return self.result

    async def _rehash(self, partial: _PartFile) -> None:
        """Re-read the verified prefix held from an earlier run and check it against its chain."""
        count, expected = partial.segments, partial.chain
        size, total = partial.segment_size, partial.total_size
        with anyio.CancelScope() as self.rehash_scope:
            try:
                fd = await anyio.to_thread.run_sync(os.open, partial.part_path, os.O_RDONLY)
                try:
                    chain = chain_seed(total, size)
                    for index in range(count):
                        start, end = index * size, segment_end(index, total, size)
                        digest = await anyio.to_thread.run_sync(_hash_file_range, fd, start, end)
                        chain = chain_next(chain, digest)
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(os.close, fd)
                if chain != expected:
                    self.state_is_bad = True
                    self._fail(
                        TransferIntegrityError(
                            f"{partial.part_path} no longer holds the bytes its state file "
                            "recorded (changed on disk?); its state was set aside as .bad: "
                            "pass force (--force) to discard the file and start over"
                        )
                    )
            except OSError as exc:
                if not self.rehash_scope.cancel_called:  # else: the file is being discarded
                    self._fail(TransferError(f"cannot re-read {partial.part_path}: {exc}"))
        self.rehash_done.set()

    async def _handle(self, stream: ByteStream) -> None:
        async with stream:
            rx = BufferedByteReceiveStream(stream)
            try:
                partial = self.file
                await send_message(
                    stream,
                    Kind.HELLO,
                    protocol=PROTOCOL,
                    fingerprint=partial.fingerprint if partial else None,
                    offset=partial.length if partial else 0,
                )
                offer = await _expect(rx, Kind.OFFER, self.idle_timeout, "sender")
                if offer.get("protocol") != PROTOCOL:
                    await _send_error(stream, "protocol", f"this receiver speaks {PROTOCOL}")
                    return
            except _DROPS as exc:
                log.debug("connection dropped before the offer: %s", exc)
                return
            except TransferError as exc:
                log.info("a sender gave up before the offer: %s", exc)
                return
            if self.result is not None:
                await self._answer_finished(stream, rx, offer)
                return
            # A sender with a valid offer takes over from a previous connection, if any.
            scope = anyio.CancelScope()
            if self.active is not None:
                self.active.cancel()
            self.active = scope
            with scope:
                async with self.lock:
                    if self.finished.is_set():
                        return
                    self.connections += 1
                    try:
                        await self._session(stream, rx, offer)
                    except _DROPS as exc:
                        log.info("connection lost (%s); waiting for the sender", exc)
                    except Exception as exc:
                        self._fail(exc)
            if self.active is scope:
                self.active = None

    async def _adopt(self, fingerprint: str, total_size: int) -> _PartFile:
        with anyio.CancelScope(shield=True):
            old, self.file = self.file, None
            if old is not None:
                if self.rehash_scope is not None:
                    # Stop re-reading the old file, and wait until it has let go of it.
                    self.rehash_scope.cancel()
                    await self.rehash_done.wait()
                await self._disk(old.discard)
                self.resumed_from = 0
            partial = _PartFile(self.out_path, fingerprint, total_size, self.segment_size)
            await self._disk(partial.create)
            self.file = partial
            self.rehash_done.set()
        return partial

    async def _session(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, offer: dict[str, Any]
    ) -> None:
        fingerprint = get_str(offer, "fingerprint") or ""
        total = get_int(offer, "total_size", minimum=1024)
        name = offer.get("name")
        partial = self.file
        if partial is None:
            partial = await self._adopt(fingerprint, total)
        elif partial.fingerprint != fingerprint or partial.total_size != total:
            if not self.force:
                message = (
                    f"{partial.part_path} holds {partial.length} bytes of another tape "
                    f"(fingerprint {partial.fingerprint[:16]}...), but the sender offers "
                    f"{name!r} (fingerprint {fingerprint[:16]}...); nothing was changed. "
                    "Pass force (--force) to discard the partial file"
                )
                await _send_error(stream, "refused", message)
                raise TransferRefusedError(message)
            log.info("discarding %s: it holds part of another tape", partial.part_path)
            partial = await self._adopt(fingerprint, total)
        await send_message(
            stream,
            Kind.START,
            offset=partial.length,
            segment=partial.segments,
            segment_size=partial.segment_size,
            chain=partial.chain.hex(),
        )
        if self.progress is not None:
            self.progress(partial.length, total)
        while True:
            with anyio.fail_after(self.idle_timeout):
                kind, payload = await read_frame(rx)
            if kind is Kind.DATA:
                offset, data = decode_data(payload)
                if offset != partial.length or offset + len(data) > partial.bound:
                    raise ProtocolError(
                        f"DATA for bytes {offset} to {offset + len(data)} does not fit "
                        f"(holding {partial.length}, segment ends at {partial.bound})"
                    )
                await self._disk(partial.append, data)
                self.bytes_received += len(data)
                if self.progress is not None:
                    self.progress(partial.length, total)
            elif kind is Kind.SEGMENT:
                fields = decode_message(kind, payload)
                index = get_int(fields, "index")
                try:
                    digest = bytes.fromhex(get_str(fields, "sha256") or "")
                except ValueError:
                    raise ProtocolError("SEGMENT digest is not hex") from None
                try:
                    await self._disk(partial.seal, index, digest)
                except TransferIntegrityError as exc:
                    await _send_error(stream, "integrity", str(exc))
                    raise
            elif kind is Kind.END:
                await self._finish(stream, rx, partial)
                return
            elif kind is Kind.PING:
                continue
            elif kind is Kind.ERROR:
                raise _peer_error(decode_message(kind, payload), "sender")
            else:
                raise ProtocolError(f"unexpected {kind.name} from the sender")

    async def _finish(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, partial: _PartFile
    ) -> None:
        if partial.length != partial.total_size or partial.segments != partial.count:
            raise ProtocolError(
                f"END after {partial.length} of {partial.total_size} bytes "
                f"({partial.segments} of {partial.count} segments checked)"
            )
        await _wait_pinging(stream, self.rehash_done, self.idle_timeout)
        if self.fatal is not None:
            await _send_error(stream, "integrity", str(self.fatal))
            return
        chain = partial.chain.hex()
        await send_message(stream, Kind.DONE, total_size=partial.length, chain=chain)
        verdict = await _expect(rx, Kind.VERDICT, self.idle_timeout, "sender")
        if verdict.get("ok") is not True or verdict.get("chain") != chain:
            raise TransferIntegrityError(
                f"the sender's digest {verdict.get('chain')} differs from the digest {chain} "
                f"of {partial.part_path}"
            )
        with anyio.CancelScope(shield=True):
            await self._disk(partial.finalize)
            self.result = ReceiveResult(
                path=self.out_path,
                fingerprint=partial.fingerprint,
                total_size=partial.total_size,
                bytes_received=self.bytes_received,
                resumed_from=self.resumed_from,
                connections=self.connections,
                digest=chain,
            )
        # The file is in place. Stay a while for the sender's BYE: if FINISHED is lost, the
        # sender reconnects and is told again (see _answer_finished), for up to `linger` s.
        assert self.task_group is not None
        self.task_group.start_soon(self._stop_after_linger)
        await self._say_finished(stream, rx)

    async def _stop_after_linger(self) -> None:
        await anyio.sleep(self.linger)
        self.finished.set()

    async def _say_finished(self, stream: ByteStream, rx: BufferedByteReceiveStream) -> None:
        assert self.result is not None
        try:
            await send_message(stream, Kind.FINISHED, digest=self.result.digest)
            await _expect(rx, Kind.BYE, self.idle_timeout, "sender")
        except (*_DROPS, TransferError) as exc:
            log.debug("no BYE from the sender (%s); lingering", exc)
        else:
            self.finished.set()

    async def _answer_finished(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, offer: dict[str, Any]
    ) -> None:
        """A sender came back after the file was put in place: tell it so, or refuse it."""
        assert self.result is not None
        if offer.get("fingerprint") != self.result.fingerprint:
            message = f"{self.out_path} was just completed with another tape"
            await _send_error(stream, "refused", message)
            return
        await self._say_finished(stream, rx)


async def receive(
    out_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    force: bool = False,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    idle_timeout: float = 60.0,
    verify_existing: bool = True,
    linger: float = 60.0,
    progress: ProgressCallback | None = None,
    on_listening: Callable[[str, int], object] | None = None,
) -> ReceiveResult:
    """Listen on ``host:port`` and receive one tape into ``out_path``; return once it is there.

    Bytes go to ``OUT.part`` first (resumed from its last checkpoint if an earlier run left one;
    see the module documentation), then the file is renamed to ``out_path``. ``port=0`` picks a
    free port: ``on_listening(host, port)`` is called once the socket listens. Serves one
    sender at a time; a new connection with a valid offer takes over from an older one. Once
    the file is in place it returns as soon as the sender acknowledges; if that goodbye is lost
    it keeps answering a reconnecting sender for up to ``linger`` seconds, then returns.

    Raises :class:`TransferRefusedError` before listening if ``out_path`` exists or
    ``OUT.part`` cannot be trusted, and while listening if the sender offers a different tape
    than the one ``OUT.part`` holds (nothing is changed); ``force=True`` discards what is in the
    way instead. Raises :class:`TransferIntegrityError` when received bytes do not match the
    sender's digests (only checked bytes are kept), :class:`TransferError` when the sender
    stops or the disk fails, and :class:`OSError` when the address cannot be bound.
    """
    if segment_size < 1:
        raise ValueError("segment_size must be positive")
    if idle_timeout <= 0 or linger < 0:
        raise ValueError("idle_timeout must be positive and linger not negative")
    receiver = _Receiver(
        os.fspath(out_path),
        host,
        port,
        force=force,
        segment_size=segment_size,
        idle_timeout=idle_timeout,
        verify_existing=verify_existing,
        linger=linger,
        progress=progress,
        on_listening=on_listening,
    )
    return await receiver.run()
