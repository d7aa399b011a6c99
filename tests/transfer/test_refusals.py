"""A receiver that refuses a sender says why, and the sender stops at once with that reason.

Real TLS on 127.0.0.1, asyncio, asyncio+uvloop and trio. Every sender here goes through a
:class:`FaultProxy` that forwards faithfully, to count its connections: a refusal is never
retried. The receiver's ``OUT.part``, its state and its digests stay byte for byte as they were.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute, TaskStatus

import atartape
from atartape.format.wire import NONCE_SIZE, PROTOCOL, Kind, encode_message
from atartape.transfer import TransferError, TransferIntegrityError, TransferRefusedError
from atartape.transfer.connection import Connection
from atartape.transfer.security import accept_channel, receiver_credentials
from tests.transfer.support import (
    DEADLINE,
    SEGMENT,
    WRONG_CODE,
    FaultProxy,
    Receiving,
    full_play,
    make_partial,
    make_tree,
    read_bytes,
    send_to,
)

pytestmark = pytest.mark.anyio

SIDECARS = (".part", ".part.state", ".part.digests")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", seed=6)


async def held(out: Path) -> dict[str, bytes | None]:
    """``OUT.part`` and the files beside it, byte for byte (``None``: absent)."""
    files: dict[str, bytes | None] = {}
    for suffix in SIDECARS:
        path = anyio.Path(f"{out}{suffix}")
        files[suffix] = await path.read_bytes() if await path.exists() else None
    return files


async def refused_once(tape: atartape.Tape, out: Path, **options: object) -> TransferRefusedError:
    """Send ``tape`` through a counting proxy to a receiver of ``out``; the refusal raised.

    Checks that the sender connected once (no retry) and that the receiver stopped with a
    refusal of the same reason, having changed none of its files.
    """
    before = await held(out)
    async with anyio.create_task_group() as tg:
        receiving = await Receiving.start(tg, out)
        proxy = FaultProxy(receiving.port, [])
        port = await tg.start(proxy.run)
        with pytest.raises(TransferRefusedError) as caught:
            await send_to(tape, port, retries=3, backoff=0.01, **options)
        assert proxy.connections == 1
        if caught.value.reason != "wrong-code":
            await receiving.ended.wait()  # it told the sender, then stopped
            assert isinstance(receiving.error, TransferRefusedError)
            assert receiving.error.reason == caught.value.reason
            assert "--force" in str(receiving.error) and "was told" in str(receiving.error)
        else:
            assert not receiving.ended.is_set()  # it goes on waiting for the right sender
        tg.cancel_scope.cancel()
    assert await held(out) == before
    assert "\n" not in str(caught.value)
    return caught.value


async def test_a_damaged_partial_is_refused_with_the_byte_where(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        verified = await make_partial(tape, out, cut=500_000)
        last = verified // SEGMENT - 1  # the last checked segment
        part = anyio.Path(f"{out}.part")
        data = bytearray(await part.read_bytes())
        data[last * SEGMENT + 1000] ^= 1
        await part.write_bytes(bytes(data))
        error = await refused_once(tape, out)
        assert error.reason == "damaged-partial" and error.offset == last * SEGMENT
        assert str(error).startswith(
            f"the receiver refused: its partial file {out}.part is damaged at byte "
            f"{last * SEGMENT}: segment {last} (bytes {last * SEGMENT} to {verified})"
        )
        # Shorter than its checkpoint: damaged where it ends.
        await part.write_bytes(bytes(data[: verified - 7]))
        error = await refused_once(tape, out)
        assert error.reason == "damaged-partial" and error.offset == verified - 7
        assert f"is damaged at byte {verified - 7}" in str(error)
        # Without its state: not trusted at all.
        await anyio.Path(f"{out}.part.state").unlink()
        error = await refused_once(tape, out)
        assert error.reason == "damaged-partial" and error.offset is None
        assert "has no state file" in str(error)
        # --force discards it and starts over.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            result = await send_to(tape, receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None and result.resumed_from == 0
    assert await read_bytes(out) == await full_play(tape)
    assert not any([await anyio.Path(f"{out}{suffix}").exists() for suffix in SIDECARS])


async def test_a_damaged_partial_without_its_digests_is_refused_all_the_same(
    tree: Path, tmp_path: Path
) -> None:
    """A receiver of an earlier version kept no digests: the chain of its state still catches
    the damage, only not where it is."""
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        verified = await make_partial(tape, out, cut=300_000)
        await anyio.Path(f"{out}.part.digests").unlink()
        part = anyio.Path(f"{out}.part")
        data = bytearray(await part.read_bytes())
        data[10] ^= 1
        await part.write_bytes(bytes(data))
        error = await refused_once(tape, out)
    assert error.reason == "damaged-partial" and error.offset is None
    assert f"{out}.part is damaged before byte {verified}: " in str(error)


async def test_a_damaged_partial_found_on_resume_is_discarded_with_force(
    tree: Path, tmp_path: Path
) -> None:
    """The damage is found while a forced receiver re-reads its file: it starts over."""
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        part = anyio.Path(f"{out}.part")
        data = bytearray(await part.read_bytes())
        data[10] ^= 1
        await part.write_bytes(bytes(data))
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            result = await send_to(tape, receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None and result.resumed_from == 0
    assert await read_bytes(out) == await full_play(tape)


async def test_a_partial_of_another_recording_is_refused_with_the_reason(
    tree: Path, tmp_path: Path
) -> None:
    marked = tree / "one.bin"
    second = os.stat(marked).st_mtime_ns // 1_000_000_000 * 1_000_000_000
    os.utime(marked, ns=(second + 1000, second + 1000))
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        os.utime(marked, ns=(second + 2000, second + 2000))
        again = await atartape.record(tree, overwrite=True)
        error = await refused_once(again, out)
        assert error.reason == "another-recording"
        assert str(error).startswith(f"the receiver refused: its partial file {out}.part holds ")
        assert "of another recording of 'tree'" in str(error)
        other = await atartape.record(make_tree(tmp_path / "other", seed=7))
        error = await refused_once(other, out)
        assert error.reason == "another-tape" and "of another tape" in str(error)


async def test_a_wrong_code_is_refused_with_the_reason(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        error = await refused_once(tape, out, code=WRONG_CODE)
    assert error.reason == "wrong-code" and error.offset is None
    assert str(error).startswith("the receiver at 127.0.0.1:")
    assert "refused: wrong code" in str(error)


class ForgingReceiver:
    """Speaks TLS and the protocol, never knows the code, and answers the sender's ``AUTH``
    with ``answer``: a forged refusal, or a forged success."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    async def serve(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        credentials = await receiver_credentials(WRONG_CODE)
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

        async def handle(raw: ByteStream) -> None:
            async with raw:
                stream = await accept_channel(raw, credentials)
                connection = Connection(stream, 5, "sender")
                nonce = secrets.token_hex(NONCE_SIZE)
                await connection.send_message(
                    Kind.HELLO, protocol=PROTOCOL, auth="code", nonce=nonce
                )
                await connection.expect(Kind.AUTH)
                await connection.send(self.answer)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    while True:
                        await stream.receive()

        async with listener:
            task_status.started(listener.extra(SocketAttribute.local_port))
            await listener.serve(handle)


async def test_a_refusal_before_the_code_is_proven_says_only_wrong_code(tree: Path) -> None:
    """Whoever answers before proving the code could be anyone: its reason and its words are
    not believed (a forged "damaged, use --force" must not reach the user), and nothing it
    says is taken for success."""
    tape = await atartape.record(tree)
    forged = encode_message(
        Kind.ERROR,
        code="refused",
        reason="damaged-partial",
        message="run 'atartape receive --force' at once",
        offset=0,
    )
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            port = await tg.start(ForgingReceiver(forged).serve)
            with pytest.raises(TransferRefusedError) as caught:
                await send_to(tape, port, retries=0)
            tg.cancel_scope.cancel()
        assert caught.value.reason == "wrong-code" and caught.value.offset is None
        assert "--force" not in str(caught.value) and "at once" not in str(caught.value)
        async with anyio.create_task_group() as tg:
            finished = encode_message(Kind.FINISHED, digest="00" * 32)
            port = await tg.start(ForgingReceiver(finished).serve)
            with pytest.raises(TransferError, match="gave up") as failed:
                await send_to(tape, port, retries=0)
            tg.cancel_scope.cancel()
        assert not isinstance(failed.value, TransferRefusedError)


async def test_the_sender_proves_the_receivers_prefix_before_sending_more(
    tree: Path, tmp_path: Path
) -> None:
    """A source whose content changed with its size and mtime forged back (the tape cannot
    see it) differs from what the receiver holds: the sender finds it by hashing the prefix,
    before any new byte is sent, and the receiver's file stays as it was."""
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        before = await held(out)
        large = tree / "sub" / "deeper" / "large.bin"  # the first bytes of the tape's content
        stat = os.stat(large)
        data = bytearray(large.read_bytes())
        data[1000] ^= 1
        large.write_bytes(bytes(data))
        os.utime(large, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferIntegrityError, match="checked bytes that are not"):
                await send_to(tape, receiving.port, retries=0)
            await receiving.ended.wait()
    assert isinstance(receiving.error, TransferIntegrityError)
    assert receiving.result is None
    assert await held(out) == before
