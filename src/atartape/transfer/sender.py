"""The sending side of a transfer: :func:`send`."""

from __future__ import annotations

import hashlib
import os
from contextlib import aclosing, suppress
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import (
    TarIntegrityError,
    TarTapeError,
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
)
from ..format.wire import (
    PROTOCOL,
    Kind,
    chain_next,
    chain_of,
    encode_frame,
    get_int,
    get_str,
    segment_count,
    segment_end,
)
from ..player import TapePlayer
from ..tape import Tape
from .connection import (
    DROPS,
    FRAME_DATA,
    ProgressCallback,
    SendResult,
    describe,
    expect,
    expect_any,
    hash_and_frame,
    log,
    send_error,
    send_message,
    wait_pinging,
)

__all__ = ["send"]


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
        return TapePlayer(self.tape, source_root=self.source_root, md5=False)

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
                failure = f"cannot reach the receiver at {self.where} ({describe(exc)})"
                await self._wait_to_retry(attempts, failure, "retrying")
                continue
            self.connections += 1
            sent_before = self.bytes_sent
            try:
                async with stream:
                    return await self._session(stream)
            except DROPS as exc:
                if self.bytes_sent > sent_before:
                    attempts = 0  # that connection made progress: a new outage begins
                attempts += 1
                failure = f"the connection to {self.where} was lost ({describe(exc)})"
                await self._wait_to_retry(attempts, failure, "resuming")

    async def _session(self, stream: ByteStream) -> SendResult:
        rx = BufferedByteReceiveStream(stream)
        hello = await expect(rx, Kind.HELLO, self.idle_timeout, "receiver")
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
        kind, start = await expect_any(
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
        except TransferProtocolError:
            raise
        except TarTapeError as exc:
            # This side stops for good (the source changed or is gone, a digest differs):
            # tell the receiver, so that it stops too instead of waiting for a reconnect.
            integrity = isinstance(exc, (TransferIntegrityError, TarIntegrityError))
            await send_error(stream, "integrity" if integrity else "source", str(exc))
            raise

    async def _stream_and_finish(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, offset: int, segment: int
    ) -> SendResult:
        tape = self.tape
        await self._stream(stream, offset, segment)
        await stream.send(encode_frame(Kind.END, b"{}"))
        done = await expect(rx, Kind.DONE, self.idle_timeout, "receiver")
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
        finished = await expect(rx, Kind.FINISHED, self.idle_timeout, "receiver")
        return await self._finished(stream, finished)

    async def _finished(self, stream: ByteStream, finished: dict[str, Any]) -> SendResult:
        """The receiver has the tape in place: say goodbye (best effort) and report."""
        digest = self.agreed_chain or get_str(finished, "digest") or ""
        with anyio.move_on_after(5), suppress(*DROPS):
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
            raise TransferProtocolError(
                f"START offset {offset} / segment {segment} is inconsistent"
            )
        try:
            self.trusted[segment] = bytes.fromhex(chain or "")
        except ValueError:
            raise TransferProtocolError(f"START chain {chain!r} is not hex") from None
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
                    raise TransferError(f"cannot read the source: {describe(exc)}") from exc
                view = memoryview(chunk)
                while view:
                    take = min(len(view), bound - position, FRAME_DATA)
                    skip = max(0, offset - position)
                    frame = await anyio.to_thread.run_sync(
                        hash_and_frame, hasher, view[:take], position, skip
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
                await wait_pinging(stream, job, self.idle_timeout)
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
    host: str,
    port: int,
    *,
    source_root: str | os.PathLike[str] | None = None,
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
