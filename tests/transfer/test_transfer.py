"""The transfer tool: a tape sent through a proxy that cuts and damages connections, receivers
that restart, partial files of other tapes.

Every test runs on asyncio, asyncio+uvloop and trio (the ``anyio_backend`` fixture), over TLS
with a code unless it says ``insecure``.
"""

from __future__ import annotations

import filecmp
import os
import random
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio.abc import SocketAttribute

import atartape
from atartape.transfer import (
    TransferError,
    TransferRefusedError,
    receive,
)
from tests.transfer.support import (
    CODE,
    DEADLINE,
    Fault,
    FaultProxy,
    Receiving,
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


@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "insecure"])
async def test_transfer_survives_cuts_and_damage(
    tree: Path, tmp_path: Path, insecure: bool
) -> None:
    tape = await atartape.record(tree)
    full = await full_play(tape)
    rng = random.Random(20240606)
    plan = [Fault(cut=rng.randrange(1, 250_000)) for _ in range(4)]
    plan.insert(1, Fault(cut=rng.randrange(1, 200), upstream=False))  # during the handshake
    plan.insert(3, Fault(flip=rng.randrange(20_000, 200_000)))  # a damaged frame (TLS record)
    plan.append(Fault(cut=rng.randrange(1, 40)))  # the handshake again
    out = tmp_path / "received" / "tree.tar"
    await anyio.Path(out.parent).mkdir()
    positions: list[int] = []
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, insecure=insecure)
            proxy = FaultProxy(receiving.port, plan)
            port = await tg.start(proxy.run)
            result = await send_to(
                tape,
                port,
                insecure=insecure,
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
    # Some died in the handshake (before a session): the receiver does not count those.
    assert result.connections - 3 <= got.connections <= result.connections
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
    """Plain connections (``insecure``): the proxy finds the FINISHED frame to cut before."""
    from atartape.format.wire import Kind

    plain = {"insecure": True}

    tape = await atartape.record(tree)
    full = await full_play(tape)
    with anyio.fail_after(DEADLINE):
        # The sender comes back and is told the transfer completed.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "a.tar", segment_size=1 << 20, **plain)
            proxy = FaultProxy(receiving.port, [Fault(before=Kind.FINISHED, upstream=False)])
            port = await tg.start(proxy.run)
            result = await send_to(tape, port, backoff=0.01, **plain)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
        assert proxy.faults_done == 1 and result.connections == 2
        assert receiving.result is not None and result.digest == receiving.result.digest
        assert await read_bytes(tmp_path / "a.tar") == full
        # The sender gives up instead: the receiver waits `linger` seconds, then returns.
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, tmp_path / "b.tar", linger=0.2, **plain)
            proxy = FaultProxy(receiving.port, [Fault(before=Kind.FINISHED, upstream=False)])
            port = await tg.start(proxy.run)
            with pytest.raises(TransferError, match="gave up"):
                await send_to(tape, port, retries=0, **plain)
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
            result = await send_to(tape, receiving.port, verify_prefix=verify_prefix)
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
                await send_to(other, receiving.port)
            await receiving.ended.wait()
        assert isinstance(receiving.error, TransferRefusedError)
        assert "--force" in str(receiving.error)
        assert await part.read_bytes() == held and await state.read_bytes() == held_state
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            result = await send_to(other, receiving.port)
            await receiving.ended.wait()
    assert receiving.error is None and receiving.result is not None
    assert result.resumed_from == 0 == receiving.result.resumed_from
    assert await read_bytes(out) == await full_play(other)


async def test_changed_source_stops_both_sides(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    await anyio.Path(tree / "sub" / "mid.bin").write_bytes(b"shorter")
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(atartape.TarIntegrityError, match=r"mid\.bin"):
                await send_to(tape, receiving.port)
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
        await receive(out, "127.0.0.1", 0, code=CODE)
    assert await read_bytes(out) == b"keep me"
    # Nothing listens on a port just released: every attempt fails, then send gives up.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    with anyio.fail_after(DEADLINE), pytest.raises(TransferError, match="after 3 attempts"):
        await send_to(tape, port, retries=2, backoff=0.01)


async def test_replaces_existing_output_with_force(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    await anyio.Path(out).write_bytes(b"old")
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True, segment_size=10_000_000)
            result = await send_to(tape, receiving.port)
            await receiving.ended.wait()
    assert receiving.result is not None and result.connections == 1
    assert await read_bytes(out) == await full_play(tape)


async def test_a_sealed_compressed_tape_goes_sealed_and_resumes(tree: Path, tmp_path: Path) -> None:
    """A tape recorded with zstd and age is sent as it was recorded: the receiver holds the
    sealed bytes (which ``age -d`` and ``zstd -d`` turn back into the tar), across cuts."""
    from atartape.format import age

    identity = age.X25519Identity.generate()
    tape = await atartape.record(
        tree, compress="zstd", frame_size="64KiB", seal=[str(identity.recipient)]
    )
    sealed = await full_play(tape)
    plain = b"".join([c async for c in atartape.TapePlayer(tape, view="plain").chunks()])
    plan = [Fault(cut=30_000), Fault(cut=70_000)]
    out = tmp_path / "tree.tar.zst.age"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            port = await tg.start(FaultProxy(receiving.port, plan).run)
            result = await send_to(tape, port, retries=5, backoff=0.01)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
    assert receiving.error is None, receiving.error
    assert result.total_size == len(sealed) and result.connections == 3
    assert result.identity == atartape.TapePlayer(tape).identity != tape.identity
    assert await read_bytes(out) == sealed
    from atartape.archive.decoded import decoded
    from atartape.archive.sources import LocalFileSource

    async with LocalFileSource(out) as source:
        opened = await decoded(source, age_identity=str(identity))
        assert await opened.read_range(0, len(plain)) == plain
