"""The transfer tool: a tape sent over TCP through a proxy that cuts and damages connections.

Every test runs on asyncio, asyncio+uvloop and trio (the ``anyio_backend`` fixture).
"""

from __future__ import annotations

import filecmp
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.abc import ByteStream, SocketAttribute, TaskGroup, TaskStatus

import atartape
from atartape.transfer import (
    TransferError,
    TransferIntegrityError,
    TransferRefusedError,
    receive,
    send,
)
from tests.helpers import write

pytestmark = pytest.mark.anyio

SEGMENT = 64 * 1024  # small segments: many checkpoints in a small tape
DEADLINE = 60  # seconds for any one test: a hang fails instead of blocking the run


def make_tree(root: Path, seed: int) -> Path:
    """A tree of about 1.4 MB: sizes around block edges, nested folders, a symlink."""
    rng = random.Random(seed)
    for name, size in [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("block.bin", 512),
        ("block1.bin", 513),
        ("sub/mid.bin", 70_000),
        ("sub/deeper/large.bin", 400_000),
        ("sub/deeper/larger.bin", 900_000),
    ]:
        write(root / name, rng.randbytes(size))
    (root / "empty_dir").mkdir()
    (root / "link").symlink_to("one.bin")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", seed=6)


def same_tree(left: Path, right: Path) -> bool:
    """Whether two trees hold the same paths, file bytes and link targets (not .tartape)."""

    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if ".tartape" not in p.parts}

    names = listing(left)
    if names != listing(right):
        return False
    for name in names:
        a, b = left / name, right / name
        if a.is_symlink() or b.is_symlink():
            if os.readlink(a) != os.readlink(b):
                return False
        elif a.is_file() and not filecmp.cmp(a, b, shallow=False):
            return False
    return True


async def full_play(tape: atartape.Tape) -> bytes:
    return b"".join([chunk async for chunk in atartape.TapePlayer(tape).stream()])


async def read_bytes(path: Path) -> bytes:
    return await anyio.Path(path).read_bytes()


@dataclass
class Fault:
    """What the proxy does to one connection: cut it after ``cut`` bytes, flip byte ``flip``.

    ``upstream`` picks the direction counted: sender to receiver (True) or back (False).
    """

    cut: int | None = None
    flip: int | None = None
    upstream: bool = True
    before: int | None = None  # cut just before the first frame of this kind


def frames_before(data: bytes, kind: int) -> int | None:
    """How many bytes of ``data`` precede the first whole-or-partial frame of ``kind``."""
    position = 0
    while position + 5 <= len(data):
        if data[position] == kind:
            return position
        position += 9 + int.from_bytes(data[position + 1 : position + 5], "big")
    return None


class FaultProxy:
    """Forwards connections on 127.0.0.1 to ``target``; connection ``i`` suffers ``plan[i]``."""

    def __init__(self, target: int, plan: list[Fault]) -> None:
        self.target = target
        self.plan = plan
        self.connections = 0
        self.faults_done = 0
        self.port = 0

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started(self.port)
            await listener.serve(self._handle)

    async def _handle(self, client: ByteStream) -> None:
        index = self.connections
        self.connections += 1
        fault = self.plan[index] if index < len(self.plan) else None
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                up = fault if fault is not None and fault.upstream else None
                down = fault if fault is not None and not fault.upstream else None
                tg.start_soon(self._pump, client, upstream, up, tg)
                tg.start_soon(self._pump, upstream, client, down, tg)

    async def _pump(
        self, src: ByteStream, dst: ByteStream, fault: Fault | None, tg: TaskGroup
    ) -> None:
        count = 0
        seen = b""
        try:
            async for chunk in src:
                if fault is not None and fault.before is not None:
                    seen += chunk
                    cut = frames_before(seen, fault.before)
                    if cut is not None:
                        fault = Fault(cut=cut)
                flip = fault.flip if fault is not None else None
                if flip is not None and count <= flip < count + len(chunk):
                    damaged = bytearray(chunk)
                    damaged[flip - count] ^= 0x5A
                    chunk = bytes(damaged)
                    self.faults_done += 1
                if fault is not None and fault.cut is not None and count + len(chunk) >= fault.cut:
                    if fault.cut > count:
                        await dst.send(chunk[: fault.cut - count])
                    self.faults_done += 1
                    break
                await dst.send(chunk)
                count += len(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        tg.cancel_scope.cancel()  # either direction ending ends the connection: both close


class Receiving:
    """A :func:`receive` running in a task group; ``result`` or ``error`` once it ends."""

    def __init__(self) -> None:
        self.port = 0
        self.ready = anyio.Event()
        self.ended = anyio.Event()
        self.result: atartape.transfer.ReceiveResult | None = None
        self.error: Exception | None = None

    @classmethod
    async def start(cls, tg: TaskGroup, out: Path, **options: Any) -> Receiving:
        receiving = cls()

        def on_listening(host: str, port: int) -> None:
            receiving.port = port
            receiving.ready.set()

        async def run() -> None:
            try:
                receiving.result = await receive(
                    out,
                    "127.0.0.1",
                    0,
                    on_listening=on_listening,
                    **{"segment_size": SEGMENT, **options},
                )
            except Exception as exc:
                receiving.error = exc
            finally:
                receiving.ready.set()
                receiving.ended.set()

        tg.start_soon(run)
        await receiving.ready.wait()
        return receiving


async def make_partial(tape: atartape.Tape, out: Path, cut: int) -> int:
    """Leave ``OUT.part`` as a receiver that was stopped after about ``cut`` bytes does."""
    async with anyio.create_task_group() as tg:
        receiving = await Receiving.start(tg, out)
        proxy = FaultProxy(receiving.port, [Fault(cut=cut)])
        port = await tg.start(proxy.run)
        with pytest.raises(TransferError, match="gave up"):
            await send(tape, "127.0.0.1", port, retries=0)
        tg.cancel_scope.cancel()
    assert receiving.result is None and receiving.error is None  # it was only stopped
    state = json.loads(await anyio.Path(f"{out}.part.state").read_text())
    assert state["verified"] > 0 and state["verified"] % SEGMENT == 0
    return int(state["verified"])


async def test_transfer_survives_cuts_and_damage(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    full = await full_play(tape)
    rng = random.Random(20240606)
    plan = [Fault(cut=rng.randrange(1, 250_000)) for _ in range(4)]
    plan.insert(1, Fault(cut=rng.randrange(1, 200), upstream=False))  # during the handshake
    plan.insert(3, Fault(flip=rng.randrange(20_000, 200_000)))  # a damaged frame
    plan.append(Fault(cut=rng.randrange(1, 40)))  # the handshake again
    out = tmp_path / "received" / "tree.tar"
    await anyio.Path(out.parent).mkdir()
    positions: list[int] = []
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            proxy = FaultProxy(receiving.port, plan)
            port = await tg.start(proxy.run)
            result = await send(
                tape,
                "127.0.0.1",
                port,
                retries=5,
                backoff=0.01,
                progress=lambda position, total: positions.append(position),
            )
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
    assert receiving.error is None, receiving.error
    got = receiving.result
    assert got is not None
    assert proxy.faults_done == len(plan)
    assert result.connections == len(plan) + 1
    assert result.connections - 1 <= got.connections <= result.connections  # one died early
    assert result.total_size == got.total_size == tape.total_size
    assert result.digest == got.digest and result.fingerprint == got.fingerprint
    assert result.bytes_sent >= tape.total_size and got.bytes_received == tape.total_size
    assert positions[-1] == tape.total_size
    assert await read_bytes(out) == full
    assert not await anyio.Path(f"{out}.part").exists()
    assert not await anyio.Path(f"{out}.part.state").exists()
    # GNU tar extracts the received file to the same tree.
    dest = tmp_path / "extracted"
    await anyio.Path(dest).mkdir()
    done = await anyio.run_process(["tar", "-xf", str(out), "-C", str(dest)], check=False)
    assert done.returncode == 0, done.stderr
    assert await anyio.to_thread.run_sync(same_tree, tree, dest / "tree")


async def test_lost_finished_is_told_again_or_lingered_out(tree: Path, tmp_path: Path) -> None:
    from atartape.format.wire import Kind

    tape = await atartape.record(tree)
    full = await full_play(tape)
    with anyio.fail_after(DEADLINE):
        # The sender comes back and is told the transfer completed.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "a.tar", segment_size=1 << 20)
            proxy = FaultProxy(receiving.port, [Fault(before=Kind.FINISHED, upstream=False)])
            port = await tg.start(proxy.run)
            result = await send(tape, "127.0.0.1", port, backoff=0.01)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
        assert proxy.faults_done == 1 and result.connections == 2
        assert receiving.result is not None and result.digest == receiving.result.digest
        assert await read_bytes(tmp_path / "a.tar") == full
        # The sender gives up instead: the receiver waits `linger` seconds, then returns.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "b.tar", linger=0.2)
            proxy = FaultProxy(receiving.port, [Fault(before=Kind.FINISHED, upstream=False)])
            port = await tg.start(proxy.run)
            with pytest.raises(TransferError, match="gave up"):
                await send(tape, "127.0.0.1", port, retries=0)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
        assert receiving.result is not None
        assert await read_bytes(tmp_path / "b.tar") == full


@pytest.mark.parametrize("verify_prefix", [True, False], ids=["verify-prefix", "trust-receiver"])
async def test_restarted_receiver_resumes_at_checkpoint(
    tree: Path, tmp_path: Path, verify_prefix: bool
) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        verified = await make_partial(tape, out, cut=700_000)
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            result = await send(tape, "127.0.0.1", receiving.port, verify_prefix=verify_prefix)
            await receiving.ended.wait()
    assert receiving.error is None and receiving.result is not None
    assert result.resumed_from == verified == receiving.result.resumed_from
    assert result.bytes_sent == tape.total_size - verified
    assert receiving.result.bytes_received == tape.total_size - verified
    assert result.digest == receiving.result.digest
    assert await read_bytes(out) == await full_play(tape)


async def test_other_tape_refused_and_kept_then_forced(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    other = await atartape.record(make_tree(tmp_path / "other", seed=7))
    assert other.fingerprint != tape.fingerprint
    out = tmp_path / "tree.tar"
    part, state = anyio.Path(f"{out}.part"), anyio.Path(f"{out}.part.state")
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        held, held_state = await part.read_bytes(), await state.read_bytes()
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferRefusedError, match="another tape"):
                await send(other, "127.0.0.1", receiving.port)
            await receiving.ended.wait()
        assert isinstance(receiving.error, TransferRefusedError)
        assert "--force" in str(receiving.error)
        assert await part.read_bytes() == held and await state.read_bytes() == held_state
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            result = await send(other, "127.0.0.1", receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None and receiving.result is not None
    assert result.resumed_from == 0 == receiving.result.resumed_from
    assert await read_bytes(out) == await full_play(other)


async def test_damaged_partial_file_is_caught(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=500_000)
        part = Path(f"{out}.part")
        data = bytearray(await read_bytes(part))
        data[1000] ^= 1
        await anyio.Path(part).write_bytes(bytes(data))
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferError):
                await send(tape, "127.0.0.1", receiving.port, retries=1, backoff=0.01)
            await receiving.ended.wait()
        assert isinstance(receiving.error, TransferIntegrityError)
        assert "--force" in str(receiving.error)
        assert await anyio.Path(f"{out}.part.state.bad").exists()
        # Without its state the file is not trusted: refused, unless forced.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
        assert isinstance(receiving.error, TransferRefusedError)
        assert "no state file" in str(receiving.error)
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            await send(tape, "127.0.0.1", receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None
    assert await read_bytes(out) == await full_play(tape)


async def test_changed_source_stops_both_sides(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    await anyio.Path(tree / "sub" / "mid.bin").write_bytes(b"shorter")
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(atartape.TarIntegrityError, match=r"mid\.bin"):
                await send(tape, "127.0.0.1", receiving.port)
            await receiving.ended.wait()
    assert isinstance(receiving.error, TransferError)
    assert "mid.bin" in str(receiving.error)
    assert not await anyio.Path(out).exists()
    assert await anyio.Path(f"{out}.part").exists()  # the checked bytes before it are kept


async def test_existing_output_and_unreachable_receiver(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    await anyio.Path(out).write_bytes(b"keep me")
    with pytest.raises(TransferRefusedError, match="already exists"):
        await receive(out, "127.0.0.1", 0)
    assert await read_bytes(out) == b"keep me"
    # Nothing listens on a port just released: every attempt fails, then send gives up.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(DEADLINE), pytest.raises(TransferError, match="after 3 attempts"):
        await send(tape, "127.0.0.1", port, retries=2, backoff=0.01)


async def test_replaces_existing_output_with_force(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    await anyio.Path(out).write_bytes(b"old")
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True, segment_size=10_000_000)
            result = await send(tape, "127.0.0.1", receiving.port)
            await receiving.ended.wait()
    assert receiving.result is not None and result.connections == 1
    assert await read_bytes(out) == await full_play(tape)


async def test_wire_frames_reject_damage() -> None:
    from anyio.streams.buffered import BufferedByteReceiveStream

    from atartape.format import wire as _wire
    from atartape.transfer.connection import read_frame

    async def decode(data: bytes) -> tuple[_wire.Kind, bytes]:
        send_stream, receive_stream = anyio.create_memory_object_stream[bytes](1)
        async with send_stream, receive_stream:
            await send_stream.send(data)
            await send_stream.aclose()
            return await read_frame(BufferedByteReceiveStream(receive_stream))

    frame = _wire.encode_data(1234, b"payload")
    assert len(frame) == 5 + 8 + 7 + 4
    kind, payload = await decode(frame)
    assert kind is _wire.Kind.DATA and _wire.decode_data(payload)[0] == 1234
    assert bytes(_wire.decode_data(payload)[1]) == b"payload"
    for position in (0, 3, 10, len(frame) - 1):
        damaged = bytearray(frame)
        damaged[position] ^= 0x10
        with pytest.raises((atartape.TransferProtocolError, anyio.IncompleteRead)):
            await decode(bytes(damaged))
    with pytest.raises(anyio.IncompleteRead):
        await decode(frame[:-1])
    digests = [bytes([i]) * 32 for i in range(3)]
    assert _wire.chain_of(digests, 5000, 2048) != _wire.chain_of(digests[::-1], 5000, 2048)
    assert _wire.segment_count(4096, 2048) == 2 and _wire.segment_count(4097, 2048) == 3
