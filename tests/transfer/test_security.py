"""Who may write through a receiver: TLS, the code, and a man in the middle (real TLS on
127.0.0.1, asyncio and trio)."""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute

import atartape
from atartape.format.wire import NONCE_SIZE, Kind, auth_proof, code_key, get_hex
from atartape.transfer import (
    TransferRefusedError,
    new_code,
    receive,
    saved_code,
    send,
)
from atartape.transfer.connection import Connection
from atartape.transfer.security import (
    accept_channel,
    open_channel,
    receiver_credentials,
    sender_credentials,
)
from tests.helpers import free_port
from tests.transfer.support import (
    CODE,
    DEADLINE,
    WRONG_CODE,
    Receiving,
    file_mode,
    full_play,
    make_partial,
    make_tree,
    read_bytes,
    send_to,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", seed=6)


async def held(out: Path) -> tuple[bytes, bytes]:
    """What an earlier run left: ``OUT.part`` and its state, byte for byte."""
    return await read_bytes(f"{out}.part"), await read_bytes(f"{out}.part.state")


async def answer_without_a_code(port: int) -> None:
    """A client that speaks TLS and the protocol but proves no code: its AUTH has no proof."""
    credentials = await sender_credentials(CODE)  # only for its TLS context
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        channel, _certificate = await open_channel(stream, credentials, "test")
        connection = Connection(channel, 5, "receiver")
        await connection.expect(Kind.HELLO)
        await connection.send_message(Kind.AUTH, nonce=secrets.token_hex(NONCE_SIZE), proof=None)
        await connection.expect(Kind.WELCOME)


async def test_wrong_or_missing_code_is_refused_and_nothing_is_touched(
    tree: Path, tmp_path: Path
) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        verified = await make_partial(tape, out, cut=300_000)
        before = await held(out)
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferRefusedError, match="wrong code"):
                await send_to(tape, receiving.port, code=WRONG_CODE)
            with pytest.raises(TransferRefusedError, match="wrong code"):
                await answer_without_a_code(receiving.port)
            with pytest.raises(TransferRefusedError, match="requires TLS and its code"):
                await send_to(tape, receiving.port, insecure=True)
            # A client that speaks something else entirely is shown the door.
            stream = await anyio.connect_tcp("127.0.0.1", receiving.port)
            async with stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await stream.receive()
            assert not receiving.ended.is_set()  # it goes on waiting for the right sender
            assert await held(out) == before  # nothing written, nothing changed
            result = await send_to(tape, receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None and receiving.result is not None
    assert result.connections == 1 and result.resumed_from == verified
    assert receiving.result.connections == 1
    assert await read_bytes(out) == await full_play(tape)


async def test_a_code_is_required_on_both_sides(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    port = free_port()  # nothing listens: a call that got as far as connecting would retry
    with pytest.raises(ValueError, match="needs the receiver's code"):
        await send(tape, "127.0.0.1", port)
    with pytest.raises(ValueError, match="not both"):
        await send(tape, "127.0.0.1", port, code=CODE, insecure=True)
    with pytest.raises(ValueError, match="16 letters and digits"):
        await send(tape, "127.0.0.1", port, code="1234")
    out = tmp_path / "tree.tar"
    with pytest.raises(ValueError, match="needs a code"):
        await receive(out, "127.0.0.1", 0)
    with pytest.raises(ValueError, match="not both"):
        await receive(out, "127.0.0.1", 0, code=CODE, insecure=True)
    with pytest.raises(ValueError, match="16 letters and digits"):
        await receive(out, "127.0.0.1", 0, code="secret")
    assert not await anyio.Path(tmp_path / "tree.tar.part.code").exists()


async def test_plain_and_tls_refuse_each_other(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "tree.tar", insecure=True)
            with pytest.raises(TransferRefusedError, match="started with --insecure"):
                await send_to(tape, receiving.port)
            assert not receiving.ended.is_set()
            result = await send_to(tape, receiving.port, insecure=True)
            await receiving.ended.wait()
    assert receiving.result is not None and result.connections == 1
    assert not await anyio.Path(tmp_path / "tree.tar.part.code").exists()


async def test_a_restarted_receiver_takes_the_same_sender_back(tree: Path, tmp_path: Path) -> None:
    """The code survives a receiver restart (``OUT.part.code``, mode 0600): a sender that
    keeps retrying on the same address is accepted again and resumes."""
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    code = new_code()
    port = free_port()
    halfway = anyio.Event()

    def progress(position: int, total: int) -> None:
        if position >= 600_000:
            halfway.set()

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            first = await Receiving.start(tg, out, port, code=code, progress=progress)
            sent: list[atartape.transfer.SendResult] = []

            async def sender() -> None:
                sent.append(
                    await send_to(tape, port, code=code, retries=100, backoff=0.02, max_backoff=0.1)
                )

            tg.start_soon(sender)
            await halfway.wait()
            await first.stop()  # killed: OUT.part, its state and its code stay
            assert file_mode(f"{out}.part.code") == 0o600
            assert await saved_code(out) == code
            second = await Receiving.start(tg, out, port, code=await saved_code(out))
            await second.ended.wait()
    assert second.error is None and second.result is not None
    assert sent[0].connections >= 2 and sent[0].digest == second.result.digest
    assert second.result.resumed_from >= 65536
    assert await read_bytes(out) == await full_play(tape)
    assert await saved_code(out) is None  # removed with the state once OUT is complete
    assert not await anyio.Path(f"{out}.part.state").exists()


class ManInTheMiddle:
    """Sits between a sender and a receiver with a TLS certificate of its own.

    ``relay``: it opens its own TLS connection to the receiver and passes on what the sender
    says (it can read it all: that is its goal). Otherwise it poses as the receiver itself.
    It keeps the frames the sender sent it.
    """

    def __init__(self, target: int, *, relay: bool) -> None:
        self.target = target
        self.relay = relay
        self.from_sender: list[Kind] = []

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        own = await receiver_credentials(new_code())  # its own certificate, another code
        upstream = await sender_credentials(CODE)  # a TLS client context
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener:
            task_status.started(listener.extra(SocketAttribute.local_port))

            async def handle(client: ByteStream) -> None:
                async with client:
                    channel = Connection(await accept_channel(client, own), 5, "sender")
                    if self.relay:
                        raw = await anyio.connect_tcp("127.0.0.1", self.target)
                        async with raw:
                            stream, _ = await open_channel(raw, upstream, "receiver")
                            await self._relay(channel, Connection(stream, 5, "receiver"))
                    else:
                        await self._pose(channel)

            await listener.serve(handle)

    async def _relay(self, sender: Connection, receiver: Connection) -> None:
        async def pump(src: Connection, dst: Connection, record: bool) -> None:
            try:
                while True:
                    kind, payload = await src.read_frame()
                    if record:
                        self.from_sender.append(kind)
                    await dst.send(encode(kind, payload))
            except (anyio.EndOfStream, anyio.IncompleteRead, OSError, anyio.BrokenResourceError):
                pass
            tg.cancel_scope.cancel()

        from atartape.format.wire import encode_frame as encode

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, sender, receiver, True)
            tg.start_soon(pump, receiver, sender, False)

    async def _pose(self, sender: Connection) -> None:
        from atartape.format.wire import PROTOCOL

        nonce = secrets.token_bytes(NONCE_SIZE)
        await sender.send_message(Kind.HELLO, protocol=PROTOCOL, auth="code", nonce=nonce.hex())
        auth = await sender.expect(Kind.AUTH)
        self.from_sender.append(Kind.AUTH)
        # Its best forgery: a proof over its own certificate, with a key it does not have.
        forged = auth_proof(
            code_key(WRONG_CODE), "receiver", b"cert", (nonce, get_hex(auth, "nonce", NONCE_SIZE))
        )
        await sender.send_message(Kind.WELCOME, proof=forged.hex())
        try:
            while True:
                kind, _ = await sender.read_frame()
                self.from_sender.append(kind)
        except (anyio.EndOfStream, anyio.IncompleteRead, OSError, anyio.BrokenResourceError):
            pass


@pytest.mark.parametrize("relay", [True, False], ids=["relaying", "posing"])
async def test_a_man_in_the_middle_can_neither_write_nor_read(
    tree: Path, tmp_path: Path, relay: bool
) -> None:
    """Relaying: the sender's proof covers the middle man's certificate, so the receiver
    refuses it. Posing as the receiver: the sender refuses its proof (the certificate is not
    the one the code vouches for). Either way no byte of the tape is sent or written."""
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            middle = ManInTheMiddle(receiving.port, relay=relay)
            port = await tg.start(middle.serve)
            expected = "wrong code" if relay else "did not prove that it knows the code"
            with pytest.raises(TransferRefusedError, match=expected):
                await send_to(tape, port)
            assert middle.from_sender == [Kind.AUTH]  # no OFFER, no DATA
            assert not await anyio.Path(f"{out}.part").exists()
            # The receiver was not disturbed: the real sender goes straight to it.
            result = await send_to(tape, receiving.port)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
    assert receiving.result is not None and result.connections == 1
    assert await read_bytes(out) == await full_play(tape)


async def test_a_sender_of_another_version_is_told_which_one_this_is(
    tree: Path, tmp_path: Path
) -> None:
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "tree.tar")
            stream = await anyio.connect_tcp("127.0.0.1", receiving.port)
            async with stream:
                await stream.send(b"ATARTAPE-TRANSFER/3 tls\r\n")
                answer = b""
                with pytest.raises(anyio.EndOfStream):
                    while True:
                        answer += await stream.receive()
            assert answer == b"ATARTAPE-TRANSFER/2 tls\r\n"
            assert not receiving.ended.is_set()
            tg.cancel_scope.cancel()
