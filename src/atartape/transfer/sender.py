"""The sending side of a transfer: :func:`send`."""

from __future__ import annotations

import os
import secrets
from contextlib import aclosing, suppress
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from .._engine.index import open_index
from ..errors import (
    InvalidArgumentError,
    TarTapeError,
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
    TransferRefusedError,
)
from ..format.wire import (
    NONCE_SIZE,
    PROOF_SIZE,
    PROTOCOL,
    Kind,
    Refusal,
    SegmentHasher,
    chain_next,
    chain_of,
    get_hex,
    get_int,
    get_str,
    normalize_code,
    segment_count,
    segment_end,
)
from ..player import TapePlayer
from ..tape import Tape
from .connection import (
    DROPS,
    FRAME_DATA,
    Connection,
    Inbox,
    PeerRefusedError,
    PeerStopped,
    ProgressCallback,
    SendResult,
    describe,
    error_code,
    log,
    with_inbox,
)
from .security import Credentials, open_channel, sender_credentials
from .segments import hash_and_frame, hash_segments

__all__ = ["send"]

# Failures to open a connection that are worth another try (the receiver is not up yet, the
# link is down). Not among them: a peer that is not an atartape receiver, or refuses our mode.
_CONNECT_FAILURES = (
    OSError,  # includes TimeoutError
    anyio.EndOfStream,
    anyio.IncompleteRead,
    anyio.BrokenResourceError,
)


class _Sender:
    def __init__(
        self,
        tape: Tape,
        source_root: str | None,
        host: str,
        port: int,
        *,
        code: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        connect_timeout: float,
        idle_timeout: float,
        verify_prefix: bool,
        progress: ProgressCallback | None,
        view: str | None = None,
    ) -> None:
        self.tape = tape
        self.source_root = source_root
        # The bytes sent: the tape's view (by default the one it was recorded with).
        played = TapePlayer(tape, source_root=source_root, md5=False, view=view)
        self.view = played.view
        self.size = played.size
        self.identity = played.identity
        self.host = host
        self.port = port
        self.code = code
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.verify_prefix = verify_prefix
        self.progress = progress
        self.credentials = Credentials(None, None)
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _player(self) -> TapePlayer:
        # Pinned to the recording the tape was opened with: TapeChangedError if re-recorded.
        return TapePlayer(self.tape, source_root=self.source_root, md5=False, view=self.view)

    async def run(self) -> SendResult:
        # Before any connection: a tape recorded again since it was opened is refused here
        # (TapeChangedError); later, every play checks it again.
        async with await open_index(self.tape.index_path, expected=self.tape.identity, shared=True):
            pass
        self.credentials = await sender_credentials(self.code)
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
                connection, certificate = await self._connect()
            except _CONNECT_FAILURES as exc:
                attempts += 1
                failure = f"cannot reach the receiver at {self.where} ({describe(exc)})"
                await self._wait_to_retry(attempts, failure, "retrying")
                continue
            sent_before = self.bytes_sent
            try:
                async with connection.stream:
                    return await self._session(connection, certificate)
            except DROPS as exc:
                if self.bytes_sent > sent_before:
                    attempts = 0  # that connection made progress: a new outage begins
                attempts += 1
                failure = f"the connection to {self.where} was lost ({describe(exc)})"
                await self._wait_to_retry(attempts, failure, "resuming")

    async def _connect(self) -> tuple[Connection, bytes]:
        """Connect, exchange preambles and shake hands (TLS), all within ``connect_timeout``.

        Raises :class:`TransferProtocolError` (not retried) if the peer is not an atartape
        receiver, :class:`TransferRefusedError` if it does not use our mode (TLS or plain).
        """
        try:
            with anyio.fail_after(self.connect_timeout):
                stream = await anyio.connect_tcp(self.host, self.port)
                self.connections += 1
                try:
                    channel, certificate = await open_channel(stream, self.credentials, self.where)
                except BaseException:
                    await anyio.aclose_forcefully(stream)
                    raise
        except TimeoutError:
            raise TimeoutError(
                f"no connection and handshake within {self.connect_timeout:g} s"
            ) from None
        return Connection(channel, self.idle_timeout, "receiver"), certificate

    async def _session(self, connection: Connection, certificate: bytes) -> SendResult:
        hello = await connection.expect(Kind.HELLO)
        if hello.get("protocol") != PROTOCOL:
            raise TransferError(f"{self.where} speaks {hello.get('protocol')!r}, not {PROTOCOL!r}")
        await self._authenticate(connection, hello, certificate)
        tape = self.tape
        await connection.send_message(
            Kind.OFFER,
            protocol=PROTOCOL,
            fingerprint=tape.fingerprint,
            identity=self.identity,
            total_size=self.size,
            name=tape.name,
            view=self.view,
        )
        kind, start = await connection.expect_any((Kind.START, Kind.FINISHED))
        if kind is Kind.FINISHED:  # it completed, but its FINISHED was lost: we reconnected
            return await self._finished(connection, start)
        offset, segment = self._check_start(start)
        if self.resumed_from is None:
            self.resumed_from = offset
            if offset:
                log.info("the receiver holds %d bytes; resuming there", offset)
        missing = any(i not in self.digests for i in range(segment))
        if missing and self.verify_prefix:
            self._start_hashing(0, segment)
        try:
            return await with_inbox(
                connection,
                lambda inbox: self._stream_and_finish(connection, inbox, offset, segment),
            )
        except (TransferProtocolError, PeerStopped):
            raise
        except TarTapeError as exc:
            # This side stops for good (the source changed or is gone, the tape was recorded
            # again, a digest differs): tell the receiver, so that it stops too instead of
            # waiting for a reconnect.
            await connection.send_error(error_code(exc), str(exc))
            raise

    async def _authenticate(
        self, connection: Connection, hello: dict[str, Any], certificate: bytes
    ) -> None:
        """Prove the code to the receiver, then check its proof (see :mod:`.security`)."""
        credentials = self.credentials
        if credentials.key is None:
            await connection.send_message(Kind.AUTH, nonce=None, proof=None)
            await connection.expect(Kind.WELCOME)
            return
        if hello.get("auth") != "code":
            raise TransferRefusedError(f"the receiver at {self.where} does not ask for a code")
        nonces = (get_hex(hello, "nonce", NONCE_SIZE), secrets.token_bytes(NONCE_SIZE))
        proof = credentials.proof("sender", certificate, nonces)
        await connection.send_message(Kind.AUTH, nonce=nonces[1].hex(), proof=proof.hex())
        try:
            welcome = await connection.expect(Kind.WELCOME)
        except PeerStopped:
            # Until it proves the code, the peer is anyone (a receiver cannot prove anything to
            # a sender whose code is wrong): its words are not shown, and no reason but the
            # only one a receiver has at this point is reported.
            raise PeerRefusedError(
                f"the receiver at {self.where} refused: wrong code (it is not the code that "
                "receiver printed, or was given); nothing was sent",
                reason=Refusal.WRONG_CODE.value,
            ) from None
        try:
            given = get_hex(welcome, "proof", PROOF_SIZE)
        except TransferProtocolError:
            given = b""
        if not credentials.check("receiver", certificate, nonces, given):
            raise TransferRefusedError(
                f"the peer at {self.where} did not prove that it knows the code: it is not "
                "the receiver that printed it (a man in the middle?); nothing was sent"
            )

    async def _stream_and_finish(
        self, connection: Connection, inbox: Inbox, offset: int, segment: int
    ) -> SendResult:
        if self.verify_prefix and segment:
            await self._settle_prefix(connection, segment)
        await self._stream(connection, offset, segment)
        await connection.send_frame(Kind.END)
        done = await inbox.expect(Kind.DONE)
        their_size = get_int(done, "total_size")
        their_chain = get_str(done, "chain")
        chain = (await self._final_chain(connection)).hex()
        ok = their_size == self.size and their_chain == chain
        await connection.send_message(Kind.VERDICT, ok=ok, chain=chain)
        if not ok:
            raise TransferIntegrityError(
                f"the receiver at {self.where} holds {their_size} bytes with digest "
                f"{their_chain}, the tape has {self.size} bytes with digest {chain}"
            )
        self.agreed_chain = chain
        finished = await inbox.expect(Kind.FINISHED)
        return await self._finished(connection, finished)

    async def _finished(self, connection: Connection, finished: dict[str, Any]) -> SendResult:
        """The receiver has the tape in place: say goodbye (best effort) and report."""
        digest = self.agreed_chain or get_str(finished, "digest") or ""
        with anyio.move_on_after(5), suppress(*DROPS):
            await connection.send_frame(Kind.BYE)
        return SendResult(
            fingerprint=self.tape.fingerprint,
            total_size=self.size,
            bytes_sent=self.bytes_sent,
            resumed_from=self.resumed_from or 0,
            connections=self.connections,
            digest=digest,
            identity=self.identity,
        )

    async def _settle_prefix(self, connection: Connection, segment: int) -> None:
        """Prove, before any new byte goes, that the receiver's checked prefix is this tape's.

        The segments ``[0, segment)`` the receiver holds are hashed from the source (by this
        sender when it streamed them, else now, in the background job started for them) and
        their chain compared with the one the receiver stated in ``START``: so the receiver
        never appends to a prefix that was not proven, and a source that broke its promise in
        the prefix stops the transfer before anything more leaves. ``PING`` frames keep the
        receiver waiting meanwhile. Raises :class:`TransferIntegrityError` if they differ.
        """
        for job in list(self.hash_jobs):
            await connection.wait_pinging(job)
        if self.hash_error is not None:
            raise self.hash_error
        total, size = self.size, self.segment_size
        digests = [self.digests.get(i) for i in range(segment)]
        if any(digest is None for digest in digests):  # pragma: no cover - started in _session
            raise TransferError("could not hash the segments the receiver holds")
        ours = chain_of([d for d in digests if d is not None], total, size)
        if ours != self.trusted[segment]:
            end = segment_end(segment - 1, total, size)
            raise TransferIntegrityError(
                f"the receiver at {self.where} holds {end} checked bytes that are not those of "
                f"tape {self.tape.name!r} (their digest chain differs); nothing more was sent"
            )

    def _check_start(self, start: dict[str, Any]) -> tuple[int, int]:
        total = self.size
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

    async def _stream(self, connection: Connection, offset: int, segment: int) -> None:
        """Play from the start of ``segment``, hash every byte, send those from ``offset``."""
        total = self.size
        if self.progress is not None:
            self.progress(offset, total)
        hasher = SegmentHasher(total, self.segment_size, segment)
        if hasher.position >= total:
            return
        async with aclosing(self._player().chunks(hasher.position)) as chunks:
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except OSError as exc:  # the disk, not the network: do not retry
                    raise TransferError(f"cannot read the source: {describe(exc)}") from exc
                view = memoryview(chunk)
                while view:
                    take = min(len(view), hasher.room, FRAME_DATA)
                    if take == 0:
                        raise TransferError(f"the source played past the tape's {total} bytes")
                    skip = max(0, offset - hasher.position)
                    done, frame = await anyio.to_thread.run_sync(
                        hash_and_frame, hasher, view[:take], skip
                    )
                    if frame is not None:
                        await connection.send(frame)
                        self.bytes_sent += take - skip
                        if self.progress is not None:
                            self.progress(hasher.position, total)
                    view = view[take:]
                    for index, digest in done:
                        self._record_digest(index, digest)
                        await connection.send_message(
                            Kind.SEGMENT, index=index, sha256=digest.hex()
                        )

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
        total, size = self.size, self.segment_size
        try:
            hasher = SegmentHasher(total, size, first)
            end = segment_end(stop - 1, total, size)
            async with aclosing(self._player().chunks(hasher.position, end)) as chunks:
                await hash_segments(chunks, hasher, self._record_digest)
        except Exception as exc:  # reported by _final_chain
            self.hash_error = exc
        finally:
            done.set()

    async def _final_chain(self, connection: Connection) -> bytes:
        """The sender's chain digest of the whole tape; waits for background hashing."""
        total, size = self.size, self.segment_size
        count = segment_count(total, size)
        for _ in range(2):
            for job in list(self.hash_jobs):
                await connection.wait_pinging(job)
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
    code: str | None = None,
    insecure: bool = False,
    source_root: str | os.PathLike[str] | None = None,
    retries: int = 10,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    connect_timeout: float = 30.0,
    idle_timeout: float = 60.0,
    verify_prefix: bool = True,
    progress: ProgressCallback | None = None,
    view: str | None = None,
) -> SendResult:
    """Send ``tape`` (read from ``source_root``, by default where it was recorded) to a receiver.

    The bytes sent are the tape's ``view``: by default the one it was recorded with (a sealed
    tape goes sealed, see :mod:`atartape.views`), ``"plain"`` for the tar.

    ``code`` is the code the receiver printed (:mod:`atartape.transfer.security`): the
    connection is TLS, and both sides prove they know the code before any byte of the tape
    moves. ``insecure=True`` instead sends over plain TCP without a code, to a receiver started
    the same way (trusted networks only). One of the two is required.

    Connects to ``host:port``, streams from the offset the receiver holds, and reconnects after
    a dropped connection (or while the receiver is not yet listening) with exponential backoff:
    ``backoff`` seconds, doubling up to ``max_backoff``, at most ``retries`` consecutive failed
    attempts (a connection that moved bytes resets the count). ``connect_timeout`` bounds each
    connection attempt with its handshakes; ``idle_timeout`` bounds every read and every send
    (a path that stays silent that long is treated as dropped). ``verify_prefix``: see the
    module documentation. Returns once the receiver has the whole tape, checked and renamed
    into place.

    Raises :class:`ValueError` for a malformed code or options, or a view the tape lacks;
    :class:`TransferRefusedError` when the receiver refuses this sender, with the receiver's
    ``reason`` (``"wrong-code"``, ``"damaged-partial"`` and its ``offset``,
    ``"another-recording"``, ``"another-tape"``, ``"busy"``, ``"completed"``; see "Refusals" in
    :mod:`atartape.transfer`) and its text (``the receiver refused: ...``), or when it cannot
    prove it knows the code, or uses the other mode (TLS or plain; ``reason`` ``""``);
    :class:`TransferProtocolError` at once when the peer is not an atartape receiver;
    :class:`TransferError` when the receiver stays unreachable or stops (its disk is full);
    :class:`TransferIntegrityError` when a digest differs, or when the checked prefix the
    receiver holds is not this tape's (found before any new byte is sent); and, from the source,
    :class:`~atartape.TarIntegrityError`, :class:`~atartape.SourceNotFoundError` or
    :class:`~atartape.TapeChangedError` (the index was recorded again since ``tape`` was
    opened). None of these is retried.
    """
    if (code is None) == (not insecure):
        raise InvalidArgumentError(
            "send needs the receiver's code (code=...) or insecure=True, not both"
            if insecure
            else "send needs the receiver's code (code=...), or insecure=True on a trusted network"
        )
    if code is not None:
        code = normalize_code(code)
    if retries < 0 or backoff < 0 or max_backoff < 0:
        raise InvalidArgumentError("retries, backoff and max_backoff must not be negative")
    if connect_timeout <= 0 or idle_timeout <= 0:
        raise InvalidArgumentError("connect_timeout and idle_timeout must be positive")
    sender = _Sender(
        tape,
        os.fspath(source_root) if source_root is not None else None,
        host,
        port,
        code=code,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        connect_timeout=connect_timeout,
        idle_timeout=idle_timeout,
        verify_prefix=verify_prefix,
        progress=progress,
        view=view,
    )
    return await sender.run()
