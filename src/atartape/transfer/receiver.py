"""The receiving side of a transfer: :func:`receive`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, SocketAttribute, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import (
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
    TransferRefusedError,
)
from ..format.wire import (
    PROTOCOL,
    Kind,
    chain_next,
    chain_seed,
    decode_data,
    decode_message,
    get_int,
    get_str,
    segment_end,
)
from .connection import (
    DEFAULT_SEGMENT_SIZE,
    DROPS,
    ProgressCallback,
    ReceiveResult,
    describe,
    expect,
    hash_file_range,
    log,
    peer_error,
    read_frame,
    send_error,
    send_message,
    wait_pinging,
)
from .partfile import PartFile, load_partial

__all__ = ["receive"]

_T = TypeVar("_T")


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
        self.file: PartFile | None = None
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
            raise TransferError(f"disk error on {self.out_path}.part: {describe(exc)}") from exc

    def _fail(self, exc: Exception) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.finished.set()

    async def run(self) -> ReceiveResult:
        self.file = await anyio.to_thread.run_sync(load_partial, self.out_path, self.force)
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

    async def _rehash(self, partial: PartFile) -> None:
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
                        digest = await anyio.to_thread.run_sync(hash_file_range, fd, start, end)
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
                offer = await expect(rx, Kind.OFFER, self.idle_timeout, "sender")
                if offer.get("protocol") != PROTOCOL:
                    await send_error(stream, "protocol", f"this receiver speaks {PROTOCOL}")
                    return
            except DROPS as exc:
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
                    except DROPS as exc:
                        log.info("connection lost (%s); waiting for the sender", exc)
                    except Exception as exc:
                        self._fail(exc)
            if self.active is scope:
                self.active = None

    async def _adopt(self, fingerprint: str, total_size: int) -> PartFile:
        with anyio.CancelScope(shield=True):
            old, self.file = self.file, None
            if old is not None:
                if self.rehash_scope is not None:
                    # Stop re-reading the old file, and wait until it has let go of it.
                    self.rehash_scope.cancel()
                    await self.rehash_done.wait()
                await self._disk(old.discard)
                self.resumed_from = 0
            partial = PartFile(self.out_path, fingerprint, total_size, self.segment_size)
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
                await send_error(stream, "refused", message)
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
                    raise TransferProtocolError(
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
                    raise TransferProtocolError("SEGMENT digest is not hex") from None
                try:
                    await self._disk(partial.seal, index, digest)
                except TransferIntegrityError as exc:
                    await send_error(stream, "integrity", str(exc))
                    raise
            elif kind is Kind.END:
                await self._finish(stream, rx, partial)
                return
            elif kind is Kind.PING:
                continue
            elif kind is Kind.ERROR:
                raise peer_error(decode_message(kind, payload), "sender")
            else:
                raise TransferProtocolError(f"unexpected {kind.name} from the sender")

    async def _finish(
        self, stream: ByteStream, rx: BufferedByteReceiveStream, partial: PartFile
    ) -> None:
        if partial.length != partial.total_size or partial.segments != partial.count:
            raise TransferProtocolError(
                f"END after {partial.length} of {partial.total_size} bytes "
                f"({partial.segments} of {partial.count} segments checked)"
            )
        await wait_pinging(stream, self.rehash_done, self.idle_timeout)
        if self.fatal is not None:
            await send_error(stream, "integrity", str(self.fatal))
            return
        chain = partial.chain.hex()
        await send_message(stream, Kind.DONE, total_size=partial.length, chain=chain)
        verdict = await expect(rx, Kind.VERDICT, self.idle_timeout, "sender")
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
            await expect(rx, Kind.BYE, self.idle_timeout, "sender")
        except (*DROPS, TransferError) as exc:
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
            await send_error(stream, "refused", message)
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
