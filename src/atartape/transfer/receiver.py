"""The receiving side of a transfer: :func:`receive`."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.abc import ByteStream, SocketAttribute, TaskGroup

from .._engine.files import unlink_quietly
from ..errors import (
    InvalidArgumentError,
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
    PeerRefusal,
    Refusal,
    SegmentHasher,
    chain_of,
    decode_data,
    decode_message,
    get_hex,
    get_int,
    get_str,
    normalize_code,
    segment_end,
)
from .connection import (
    DEFAULT_SEGMENT_SIZE,
    DROPS,
    Connection,
    PeerStopped,
    ProgressCallback,
    ReceiveResult,
    describe,
    error_code,
    log,
    peer_error,
)
from .partfile import PartFile, PartialProblem, load_partial
from .security import (
    Credentials,
    accept_channel,
    code_path,
    receiver_credentials,
    store_code,
)
from .segments import file_chunks, hash_segments, open_for_reading

__all__ = ["receive"]

_T = TypeVar("_T")

_KEPT_HERE = "nothing was changed; pass force (--force) to discard it"
_KEPT_THERE = "nothing was changed (the receiver's --force discards it)"

Claim = tuple[str, str, int]
"""What a sender offers, and what a partial file belongs to: fingerprint, identity, size."""


def _short(value: str) -> str:
    return f"{value[:16]}..."


class _SegmentDiffers(Exception):
    """A segment re-read from ``OUT.part`` is not the one that was checked: stop re-reading."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _Receiver:
    def __init__(
        self,
        out_path: str,
        host: str,
        port: int,
        *,
        code: str | None,
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
        self.code = code
        self.force = force
        self.segment_size = segment_size
        self.idle_timeout = idle_timeout
        self.verify_existing = verify_existing
        self.progress = progress
        self.on_listening = on_listening
        self.credentials = Credentials(None, None)
        self.file: PartFile | None = None
        self.claim: Claim | None = None  # the tape this run took a sender for: it keeps it
        self.lock = anyio.Lock()
        self.active: anyio.CancelScope | None = None
        self.finished = anyio.Event()
        self.fatal: Exception | None = None
        self.result: ReceiveResult | None = None  # set once the file is in place
        self.task_group: TaskGroup | None = None
        self.rehash_done = anyio.Event()
        self.rehash_scope: anyio.CancelScope | None = None
        # Why OUT.part cannot be resumed, once known (when it is loaded, or re-read): the
        # first authenticated sender of its tape is told, then this receiver stops.
        self.damage: PartialProblem | None = None
        self.resumed_from = 0
        self.bytes_received = 0
        self.connections = 0

    async def _disk(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run file work in a worker thread; a failing disk stops the transfer for good."""
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except OSError as exc:
            kept = self.file.verified if self.file is not None else 0
            reason = f"{exc.strerror} (errno {exc.errno})" if exc.strerror else describe(exc)
            raise TransferError(
                f"cannot write {self.out_path}.part: {reason}; the {kept} bytes up to its "
                "last checkpoint are kept"
            ) from exc

    def _fail(self, exc: Exception) -> None:
        if self.fatal is None:
            self.fatal = exc
        self.finished.set()

    def _damaged(self, problem: PartialProblem) -> None:
        self.damage = problem
        log.warning(
            "%s; it cannot be resumed: the first sender will be told (--force discards it)",
            problem.what,
        )

    async def _refuse(
        self,
        connection: Connection,
        reason: Refusal,
        text: str,
        *,
        offset: int | None = None,
        stop: str | None = None,
    ) -> None:
        """Tell the sender why it is refused; then, if ``stop`` (this side's own one line),
        stop this receiver with a :class:`TransferRefusedError` saying it."""
        await connection.send_refusal(PeerRefusal(reason, text, offset))
        if stop is not None:
            self._fail(TransferRefusedError(stop, reason=reason.value, offset=offset))

    async def run(self) -> ReceiveResult:
        loaded = await anyio.to_thread.run_sync(load_partial, self.out_path, self.force)
        if isinstance(loaded, PartialProblem):
            self._damaged(loaded)
        else:
            self.file = loaded
        if self.file is not None:
            self.resumed_from = self.file.length
            log.info("resuming %s.part at byte %d", self.out_path, self.file.length)
        try:
            if self.code is not None:
                # Kept for a receiver restarted on the same OUT (see .security); also proves
                # early that the folder can be written.
                await anyio.to_thread.run_sync(store_code, code_path(self.out_path), self.code)
            self.credentials = await receiver_credentials(self.code)
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
        if self.fatal is not None:
            raise self.fatal
        assert self.result is not None
        return self.result

    async def _rehash(self, partial: PartFile) -> None:
        """Re-read the verified prefix held from an earlier run and check it against its state.

        Each segment is compared with its digest in ``OUT.part.digests`` where that file can be
        believed (so the first damaged segment is named), else the whole prefix with the chain
        value of the state. Damage changes nothing on disk: it is kept in ``self.damage``.
        """
        size, total = partial.segment_size, partial.total_size
        digests: list[bytes] = []

        def record(index: int, digest: bytes) -> None:
            digests.append(digest)
            if known is not None and known[index] != digest:
                raise _SegmentDiffers(index)

        with anyio.CancelScope() as self.rehash_scope:
            try:
                known = await anyio.to_thread.run_sync(partial.known_digests)
                fd = await anyio.to_thread.run_sync(open_for_reading, partial.part_path)
                try:
                    hasher = SegmentHasher(total, size)
                    async with aclosing(file_chunks(fd, 0, partial.verified)) as chunks:
                        await hash_segments(chunks, hasher, record)
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(os.close, fd)
                if chain_of(digests, total, size) != partial.chain:
                    self._damaged(
                        PartialProblem(
                            f"{partial.part_path} is damaged before byte {partial.verified}: "
                            "its checked bytes no longer give the digest recorded when they "
                            "were received"
                        )
                    )
            except _SegmentDiffers as differs:
                start = differs.index * size
                end = segment_end(differs.index, total, size)
                self._damaged(
                    PartialProblem(
                        f"{partial.part_path} is damaged at byte {start}: segment "
                        f"{differs.index} (bytes {start} to {end}) no longer holds what was "
                        "checked when it was received",
                        start,
                    )
                )
            except OSError as exc:
                if not self.rehash_scope.cancel_called:  # else: the file is being discarded
                    self._fail(TransferError(f"cannot re-read {partial.part_path}: {exc}"))
        self.rehash_done.set()

    async def _handle(self, raw: ByteStream) -> None:
        async with raw:
            try:
                remote = raw.extra(SocketAttribute.remote_address)
                peer = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
            except Exception:  # pragma: no cover - a listener without addresses
                peer = "a peer"
            # Nothing of the newcomer is trusted, and nothing it says changes anything, until
            # it has proven the code and made a well-formed offer (all within the idle timeout).
            try:
                with anyio.fail_after(self.idle_timeout):
                    stream = await accept_channel(raw, self.credentials)
                    connection = Connection(stream, self.idle_timeout, "sender")
                    offer = await self._welcome(connection)
            except TransferRefusedError as exc:
                log.info("refused a connection from %s: %s", peer, exc)
                return
            except (*DROPS, TransferError) as exc:
                log.debug("a connection from %s ended before its offer: %s", peer, describe(exc))
                return
            await self._serve(connection, offer, peer)

    async def _welcome(self, connection: Connection) -> dict[str, Any]:
        """``HELLO``, the proofs of the code (``AUTH``, ``WELCOME``), and the sender's offer.

        Raises :class:`TransferRefusedError` (having told the sender) for a wrong or missing
        proof, :class:`TransferProtocolError` for a malformed offer.
        """
        credentials = self.credentials
        nonce = secrets.token_bytes(NONCE_SIZE)
        await connection.send_message(
            Kind.HELLO,
            protocol=PROTOCOL,
            auth="none" if credentials.key is None else "code",
            nonce=None if credentials.key is None else nonce.hex(),
        )
        auth = await connection.expect(Kind.AUTH)
        proof: str | None = None
        if credentials.key is not None:
            try:
                nonces = (nonce, get_hex(auth, "nonce", NONCE_SIZE))
                given = get_hex(auth, "proof", PROOF_SIZE)
            except TransferProtocolError:
                nonces, given = (nonce, b""), b""
            if not credentials.check("sender", credentials.certificate, nonces, given):
                # Before the code is proven, the sender is anyone: it learns that its code is
                # wrong and nothing else (not what this receiver holds, nor why).
                message = (
                    "wrong code: it is not the code this receiver printed (or was given); "
                    "nothing was written"
                )
                await connection.send_refusal(PeerRefusal(Refusal.WRONG_CODE, message))
                raise TransferRefusedError(message, reason=Refusal.WRONG_CODE.value)
            proof = credentials.proof("receiver", credentials.certificate, nonces).hex()
        await connection.send_message(Kind.WELCOME, proof=proof)
        offer = await connection.expect(Kind.OFFER)
        if offer.get("protocol") != PROTOCOL:
            await connection.send_error("failed", f"this receiver speaks {PROTOCOL}")
            raise TransferProtocolError(f"the sender speaks {offer.get('protocol')!r}")
        get_str(offer, "fingerprint")
        get_str(offer, "identity")
        get_int(offer, "total_size", minimum=1)  # a compressed view may be tiny
        return offer

    async def _serve(self, connection: Connection, offer: dict[str, Any], peer: str) -> None:
        """An authenticated sender: refuse it, answer it, or let it take over the transfer."""
        claim: Claim = (offer["fingerprint"], offer["identity"], offer["total_size"])
        name = offer.get("name")
        if self.result is not None:
            await self._answer_finished(connection, claim)
            return
        held = self.claim or (self.file.tape if self.file is not None else None)
        if held is not None and claim != held:
            reason, what = self._difference(held, claim, name)
            if self.claim is not None:
                # This run already took a sender of the tape it holds: a stray sender of
                # another one is turned away, and the transfer in progress goes on.
                message = f"this receiver is receiving another tape: {what}"
                log.info("refused a sender from %s: %s", peer, message)
                await self._refuse(connection, Refusal.BUSY, message)
                return
            if not self.force:
                await self._refuse(
                    connection,
                    reason,
                    f"its partial file {what}; {_KEPT_THERE}",
                    stop=f"{what}; {_KEPT_HERE}; the sender at {peer} was told",
                )
                return
        # This sender takes over from a previous connection, if any.
        self.claim = claim
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
                    await self._session(connection, claim, peer)
                except DROPS as exc:
                    log.info("connection lost (%s); waiting for the sender", describe(exc))
                except PeerStopped as exc:
                    self._fail(exc)
                except Exception as exc:
                    await connection.send_error(error_code(exc), str(exc))
                    self._fail(exc)
        if self.active is scope:
            self.active = None

    def _difference(self, held: Claim, offered: Claim, name: object) -> tuple[Refusal, str]:
        part = f"{self.out_path}.part"
        length = self.file.length if self.file is not None else 0
        if held[0] == offered[0] and held[2] == offered[2]:
            return Refusal.ANOTHER_RECORDING, (
                f"{part} holds {length} bytes of another recording of {name!r} (identity "
                f"{_short(held[1])}, the sender's is {_short(offered[1])}: the folder was "
                "recorded again since)"
            )
        return Refusal.ANOTHER_TAPE, (
            f"{part} holds {length} bytes of another tape (fingerprint {_short(held[0])}), "
            f"but the sender offers {name!r} (fingerprint {_short(offered[0])})"
        )

    async def _adopt(self, claim: Claim) -> PartFile:
        with anyio.CancelScope(shield=True):
            old, self.file = self.file, None
            if old is not None:
                log.info("discarding %s (force): it cannot be resumed", old.part_path)
                if self.rehash_scope is not None:
                    # Stop re-reading the old file, and wait until it has let go of it.
                    self.rehash_scope.cancel()
                    await self.rehash_done.wait()
                await self._disk(old.discard)
                self.resumed_from = 0
            fingerprint, identity, total = claim
            partial = PartFile(self.out_path, fingerprint, identity, total, self.segment_size)
            await self._disk(partial.create)
            self.file = partial
            self.rehash_done.set()
        return partial

    async def _session(self, connection: Connection, claim: Claim, peer: str) -> None:
        partial = self.file
        if partial is not None and partial.tape == claim:
            # The proof of what OUT.part holds settles before any new byte is appended to it:
            # a damaged file is refused unchanged, never written past (PINGs meanwhile).
            await connection.wait_pinging(self.rehash_done)
        damage = self.damage
        if damage is not None and not self.force:
            await self._refuse(
                connection,
                Refusal.DAMAGED_PARTIAL,
                f"its partial file {damage.what}; {_KEPT_THERE}",
                offset=damage.offset,
                stop=f"{damage.what}; {_KEPT_HERE}; the sender at {peer} was told",
            )
            return
        if damage is not None or partial is None or partial.tape != claim:
            self.damage = None  # with force: a damaged file is discarded, as another tape's
            partial = await self._adopt(claim)
        total = partial.total_size
        await connection.send_message(
            Kind.START,
            offset=partial.length,
            segment=partial.segments,
            segment_size=partial.segment_size,
            chain=partial.chain.hex(),
        )
        if self.progress is not None:
            self.progress(partial.length, total)
        while True:
            kind, payload = await connection.read_frame()
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
                await self._disk(partial.seal, index, digest)
            elif kind is Kind.END:
                await self._finish(connection, partial)
                return
            elif kind is Kind.PING:
                continue
            elif kind is Kind.ERROR:
                raise peer_error(decode_message(kind, payload), "sender")
            else:
                raise TransferProtocolError(f"unexpected {kind.name} from the sender")

    async def _finish(self, connection: Connection, partial: PartFile) -> None:
        if partial.length != partial.total_size or partial.segments != partial.count:
            raise TransferProtocolError(
                f"END after {partial.length} of {partial.total_size} bytes "
                f"({partial.segments} of {partial.count} segments checked)"
            )
        await connection.wait_pinging(self.rehash_done)
        if self.fatal is not None:
            await connection.send_error("integrity", str(self.fatal))
            return
        chain = partial.chain.hex()
        await connection.send_message(Kind.DONE, total_size=partial.length, chain=chain)
        verdict = await connection.expect(Kind.VERDICT)
        if verdict.get("ok") is not True or verdict.get("chain") != chain:
            raise TransferIntegrityError(
                f"the sender's digest {verdict.get('chain')} differs from the digest {chain} "
                f"of {partial.part_path}"
            )
        with anyio.CancelScope(shield=True):
            await self._disk(partial.finalize)
            await anyio.to_thread.run_sync(unlink_quietly, code_path(self.out_path))
            self.result = ReceiveResult(
                path=self.out_path,
                fingerprint=partial.fingerprint,
                total_size=partial.total_size,
                bytes_received=self.bytes_received,
                resumed_from=self.resumed_from,
                connections=self.connections,
                digest=chain,
                identity=partial.identity,
            )
        # The file is in place. Stay a while for the sender's BYE: if FINISHED is lost, the
        # sender reconnects and is told again (see _answer_finished), for up to `linger` s.
        assert self.task_group is not None
        self.task_group.start_soon(self._stop_after_linger)
        await self._say_finished(connection)

    async def _stop_after_linger(self) -> None:
        await anyio.sleep(self.linger)
        self.finished.set()

    async def _say_finished(self, connection: Connection) -> None:
        assert self.result is not None
        try:
            await connection.send_message(Kind.FINISHED, digest=self.result.digest)
            await connection.expect(Kind.BYE)
        except (*DROPS, TransferError) as exc:
            log.debug("no BYE from the sender (%s); lingering", exc)
        else:
            self.finished.set()

    async def _answer_finished(self, connection: Connection, claim: Claim) -> None:
        """A sender came back after the file was put in place: tell it so, or refuse it."""
        result = self.result
        assert result is not None
        if claim != (result.fingerprint, result.identity, result.total_size):
            message = f"{self.out_path} was just completed with another tape"
            await self._refuse(connection, Refusal.COMPLETED, message)
            return
        await self._say_finished(connection)


async def receive(
    out_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    code: str | None = None,
    insecure: bool = False,
    force: bool = False,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    idle_timeout: float = 60.0,
    verify_existing: bool = True,
    linger: float = 60.0,
    progress: ProgressCallback | None = None,
    on_listening: Callable[[str, int], object] | None = None,
) -> ReceiveResult:
    """Listen on ``host:port`` and receive one tape into ``out_path``; return once it is there.

    ``code`` (from :func:`~atartape.transfer.new_code`, or :func:`~atartape.transfer.saved_code`
    for a receive that was interrupted) is what the sender must prove it knows, over TLS; it is
    kept in ``OUT.part.code`` (mode 0600) until the file is complete. ``insecure=True`` instead
    accepts plain-TCP senders without a code (trusted networks only). One of the two is
    required. See :mod:`atartape.transfer.security`.

    Bytes go to ``OUT.part`` first (resumed from its last checkpoint if an earlier run left one;
    see the module documentation), then the file is renamed to ``out_path``. ``port=0`` picks a
    free port: ``on_listening(host, port)`` is called once the socket listens. Serves one
    sender at a time. A newcomer is checked (mode, code, protocol, and the tape it offers)
    before it can take over from an older connection: a wrong code, or another tape than the
    one this run took a sender for, is refused and the transfer in progress goes on. Once the
    file is in place it returns as soon as the sender acknowledges; if that goodbye is lost it
    keeps answering a reconnecting sender for up to ``linger`` seconds, then returns.

    A refused sender is told why (see "Refusals" in :mod:`atartape.transfer`).

    Raises :class:`ValueError` for a malformed code or options; :class:`TransferRefusedError`
    before listening if ``out_path`` exists (``reason`` ``""``); and, once the first
    authenticated sender of the tape was told so, when ``OUT.part`` cannot be trusted
    (``reason`` ``"damaged-partial"``, ``offset`` where it is damaged if known: found when it is
    loaded, or re-read before anything is appended) or that sender offers another tape or
    recording than the one ``OUT.part`` holds (``"another-tape"``, ``"another-recording"``);
    nothing is changed, and ``force=True`` discards what is in the way instead;
    :class:`TransferIntegrityError` when received bytes do not match the sender's digests (only
    checked bytes are kept); :class:`TransferError` when the sender stops or the disk fails
    (the sender is told); and :class:`OSError` when the address cannot be bound.
    """
    if (code is None) == (not insecure):
        raise InvalidArgumentError(
            "receive needs a code (code=new_code()) or insecure=True, not both"
            if insecure
            else "receive needs a code (code=new_code()), or insecure=True on a trusted network"
        )
    if code is not None:
        code = normalize_code(code)
    if segment_size < 1:
        raise InvalidArgumentError("segment_size must be positive")
    if idle_timeout <= 0 or linger < 0:
        raise InvalidArgumentError("idle_timeout must be positive and linger not negative")
    receiver = _Receiver(
        os.fspath(out_path),
        host,
        port,
        code=code,
        force=force,
        segment_size=segment_size,
        idle_timeout=idle_timeout,
        verify_existing=verify_existing,
        linger=linger,
        progress=progress,
        on_listening=on_listening,
    )
    return await receiver.run()
