"""What goes wrong around a transfer: a silent path, stray senders, a peer that is not a
receiver, a tape recorded again, a full disk, a killed receiver's leftovers."""

from __future__ import annotations

import errno
import http.server
import json
import os
import subprocess
import threading
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio.abc import ByteStream, SocketAttribute

import atartape
from atartape.transfer import (
    TransferError,
    TransferProtocolError,
    TransferRefusedError,
)
from atartape.transfer.connection import Connection
from atartape.transfer.partfile import PartFile
from tests.transfer.support import (
    CODE,
    DEADLINE,
    SEGMENT,
    WRONG_CODE,
    Fault,
    FaultProxy,
    Receiving,
    dead_pid,
    full_play,
    make_partial,
    make_tree,
    read_bytes,
    send_to,
    stop_reading,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", seed=6)


async def test_a_send_to_a_peer_that_reads_nothing_times_out() -> None:
    """The bound on sends itself: a peer that accepts and never reads."""
    accepted = anyio.Event()

    async def never_reads(stream: ByteStream) -> None:
        async with stream:
            stop_reading(stream)
            accepted.set()
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, never_reads)
        stream = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
        async with stream:
            await accepted.wait()
            connection = Connection(stream, 0.3, "receiver")
            with anyio.fail_after(DEADLINE), pytest.raises(TimeoutError, match="took nothing"):
                for _ in range(64):  # far more than any socket buffer holds
                    await connection.send(b"x" * (4 << 20))
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "insecure"])
async def test_a_silent_path_is_dropped_and_the_transfer_resumes(
    tmp_path: Path, insecure: bool
) -> None:
    """A proxy stops forwarding (both ways) and closes nothing. The tape is larger than the
    socket buffers on the way, so the sender is stuck in a send: its idle timeout ends that
    connection, it reconnects, and the transfer completes."""
    tree = make_tree(tmp_path / "tree", seed=6, big=12_000_000)
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, insecure=insecure, segment_size=1 << 20)
            proxy = FaultProxy(receiving.port, [Fault(stall=300_000)], receive_buffer=65536)
            port = await tg.start(proxy.run)
            result = await send_to(tape, port, insecure=insecure, idle_timeout=1, backoff=0.01)
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
    assert proxy.stalled.is_set() and result.connections >= 2
    assert receiving.result is not None and receiving.result.digest == result.digest
    assert await read_bytes(out) == await full_play(tape)


async def test_stray_senders_do_not_disturb_a_transfer_in_progress(
    tree: Path, tmp_path: Path
) -> None:
    """While a transfer is under way, senders of another tape, with a wrong code, in plain
    TCP, or speaking another protocol are refused: the transfer in progress goes on, on its
    one connection."""
    tape = await atartape.record(tree)
    other = await atartape.record(make_tree(tmp_path / "other", seed=7))
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            proxy = FaultProxy(receiving.port, [Fault(pause=400_000)])
            port = await tg.start(proxy.run)
            sent: list[atartape.transfer.SendResult] = []

            async def real_sender() -> None:
                sent.append(await send_to(tape, port))

            tg.start_soon(real_sender)
            await proxy.paused.wait()  # the real sender's session is under way
            with pytest.raises(TransferRefusedError, match="receiving another tape"):
                await send_to(other, receiving.port)
            with pytest.raises(TransferRefusedError, match="wrong code"):
                await send_to(tape, receiving.port, code=WRONG_CODE)
            with pytest.raises(TransferRefusedError, match="requires TLS"):
                await send_to(other, receiving.port, insecure=True)
            stream = await anyio.connect_tcp("127.0.0.1", receiving.port)
            async with stream:
                await stream.send(b"\x02\x00\x00\x00\x02{}\x00\x00\x00\x00")  # a bare OFFER
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
                    await stream.receive()
            proxy.resume.set()
            await receiving.ended.wait()
            tg.cancel_scope.cancel()
    assert receiving.error is None and receiving.result is not None
    assert sent[0].connections == 1 and receiving.result.connections == 1
    assert await read_bytes(out) == await full_play(tape)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    connections = 0

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("insecure", [False, True], ids=["tls", "insecure"])
async def test_a_peer_that_is_not_a_receiver_fails_fast(
    tree: Path, tmp_path: Path, insecure: bool
) -> None:
    """An HTTP server, an SSH-like banner, an older protocol: told apart from their first
    bytes, and not retried (each is reached once)."""
    tape = await atartape.record(tree)
    handler = type("Handler", (_Quiet,), {"connections": 0})
    server = await anyio.to_thread.run_sync(
        lambda: http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    )
    reached = {"banner": 0, "older": 0}

    async def banner(stream: ByteStream) -> None:
        reached["banner"] += 1
        async with stream:
            await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")
            await stream.receive()

    async def older(stream: ByteStream) -> None:
        reached["older"] += 1
        async with stream:
            await stream.send(b"ATARTAPE-TRANSFER/1 tls\r\n")
            await stream.receive()

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        async with AsyncExitStack() as stack:
            listeners = [await anyio.create_tcp_listener(local_host="127.0.0.1") for _ in "ab"]
            for listener in listeners:
                await stack.enter_async_context(listener)
            tg = await stack.enter_async_context(anyio.create_task_group())
            ports = [server.server_address[1]]
            for listener, serve in zip(listeners, (banner, older)):
                tg.start_soon(listener.serve, serve)
                ports.append(listener.extra(SocketAttribute.local_port))
            shown = ["it sent '<!DOCTYPE HTML", "it sent 'SSH-2.0-OpenSSH_9.6'", "transfer/1"]
            for port, text in zip(ports, shown):
                # A retry would wait a second at least (backoff), ten times.
                with anyio.fail_after(DEADLINE), pytest.raises(TransferProtocolError) as raised:
                    await send_to(tape, port, insecure=insecure, retries=10, backoff=1)
                message = str(raised.value)
                assert f"the peer at 127.0.0.1:{port} is not an atartape receiver" in message
                assert text in message, message
            tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()
    assert handler.connections == reached["banner"] == reached["older"] == 1


async def test_a_partial_of_another_recording_is_refused_unless_forced(
    tree: Path, tmp_path: Path
) -> None:
    """Same layout (fingerprint), another recording (identity): the folder was recorded again
    with a file touched within the same second."""
    marked = tree / "one.bin"
    second = os.stat(marked).st_mtime_ns // 1_000_000_000 * 1_000_000_000
    os.utime(marked, ns=(second + 1000, second + 1000))
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        await make_partial(tape, out, cut=300_000)
        state = json.loads(await anyio.Path(f"{out}.part.state").read_text())
        assert state["identity"] == tape.identity
        before = await read_bytes(f"{out}.part")
        os.utime(marked, ns=(second + 2000, second + 2000))
        again = await atartape.record(tree, overwrite=True)
        assert again.fingerprint == tape.fingerprint and again.identity != tape.identity
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferRefusedError, match="another recording"):
                await send_to(again, receiving.port)
            await receiving.ended.wait()
        assert isinstance(receiving.error, TransferRefusedError)
        assert await read_bytes(f"{out}.part") == before
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out, force=True)
            result = await send_to(again, receiving.port)
            await receiving.ended.wait()
    assert receiving.result is not None and receiving.result.identity == again.identity
    assert result.resumed_from == 0
    assert await read_bytes(out) == await full_play(again)


async def test_a_tape_recorded_again_stops_the_sender_for_good(tree: Path, tmp_path: Path) -> None:
    """The sender's tape is pinned: re-recorded before the send, it never connects; between
    two connections, its next session stops with TapeChangedError and tells the receiver."""
    marked = tree / "one.bin"  # early in the tape: the first session has sent it already
    second = os.stat(marked).st_mtime_ns // 1_000_000_000 * 1_000_000_000
    os.utime(marked, ns=(second + 1000, second + 1000))
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            proxy = FaultProxy(receiving.port, [Fault(pause=300_000, cut=300_000)])
            port = await tg.start(proxy.run)
            failed: list[BaseException] = []
            done = anyio.Event()

            async def sender() -> None:
                try:
                    await send_to(tape, port, backoff=0.01)
                except Exception as exc:
                    failed.append(exc)
                done.set()

            tg.start_soon(sender)
            await proxy.paused.wait()
            os.utime(marked, ns=(second + 2000, second + 2000))
            await atartape.record(tree, overwrite=True)
            proxy.resume.set()  # and the connection is cut: the sender reconnects
            await done.wait()
            await receiving.ended.wait()
            # Recorded again before a send starts: refused before any connection.
            with pytest.raises(atartape.TapeChangedError):
                await send_to(tape, port)
            tg.cancel_scope.cancel()
    assert isinstance(failed[0], atartape.TapeChangedError), failed
    assert "re-recorded" in str(failed[0])
    assert proxy.connections == 2  # no retry after the second session
    assert isinstance(receiving.error, TransferError)
    assert "re-recorded" in str(receiving.error)
    state = json.loads(await anyio.Path(f"{out}.part.state").read_text())
    assert state["verified"] > 0  # the checked bytes are kept for a send of the new recording


async def _check_stopped_for_disk(
    out: Path, sender_error: BaseException, receiving: Receiving
) -> None:
    assert isinstance(sender_error, TransferError)
    assert not isinstance(sender_error, TransferRefusedError)
    assert "cannot write" in str(sender_error) and "gave up" not in str(sender_error)
    assert isinstance(receiving.error, TransferError)
    assert "cannot write" in str(receiving.error)
    state = json.loads(await anyio.Path(f"{out}.part.state").read_text())
    # Nothing past the last checkpoint is kept (the file is cut back to it).
    assert os.path.getsize(f"{out}.part") == state["verified"]
    assert state["verified"] % SEGMENT == 0


async def test_a_receiver_that_cannot_write_stops_the_sender_at_once(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO while appending: the receiver tells the sender (ERROR), both stop, no retry."""
    append = PartFile.append

    def failing(self: PartFile, data: memoryview) -> None:
        if self.length + len(data) > 500_000:
            raise OSError(errno.EIO, "Input/output error")
        append(self, data)

    monkeypatch.setattr(PartFile, "append", failing)
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferError) as raised:
                await send_to(tape, receiving.port, retries=10, backoff=1)
            await receiving.ended.wait()
    assert "Input/output error" in str(raised.value)
    await _check_stopped_for_disk(out, raised.value, receiving)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> object:
    folder = tmp_path / "tiny"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


async def test_a_full_disk_stops_both_sides(tree: Path, tiny_disk: Path) -> None:
    """A real ENOSPC: a tmpfs of 1 MiB, a tape of 1.4 MB."""
    tape = await atartape.record(tree)
    out = tiny_disk / "tree.tar"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            with pytest.raises(TransferError) as raised:
                await send_to(tape, receiving.port, retries=10, backoff=1)
            await receiving.ended.wait()
    assert "No space left on device" in str(raised.value)
    await _check_stopped_for_disk(out, raised.value, receiving)


async def test_a_killed_receivers_temporary_files_are_removed(tree: Path, tmp_path: Path) -> None:
    tape = await atartape.record(tree)
    out = tmp_path / "tree.tar"
    stale = [
        tmp_path / f".tree.tar.part.state.{dead_pid()}.0badf00d.tmp",
        tmp_path / f".tree.tar.part.code.{dead_pid()}.0badf00d.tmp",
    ]
    alive = tmp_path / f".tree.tar.part.state.{os.getpid()}.12345678.tmp"  # a writer still at it
    for path in [*stale, alive]:
        await anyio.Path(path).write_bytes(b"{")
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            receiving = await Receiving.start(tg, out)
            assert not any([await anyio.Path(p).exists() for p in stale])
            assert await anyio.Path(alive).exists()
            await send_to(tape, receiving.port)
            await receiving.ended.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tree.tar")]
    assert leftovers == [alive.name]


async def test_a_code_file_of_another_kind_is_refused(tree: Path, tmp_path: Path) -> None:
    from atartape.transfer import saved_code

    out = tmp_path / "tree.tar"
    await anyio.Path(f"{out}.part.code").write_text("not json")
    with pytest.raises(TransferRefusedError, match="unreadable"):
        await saved_code(out)
    await anyio.Path(f"{out}.part.code").write_text(
        json.dumps({"format": "atartape-transfer-code", "code": CODE.upper()})
    )
    assert await saved_code(out) == CODE
