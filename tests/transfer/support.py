"""What the transfer tests share: trees, a receiver in a task group, a faulty proxy."""

from __future__ import annotations

import json
import os
import random
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute, TaskGroup, TaskStatus

import atartape
from atartape.transfer import TransferError, receive, send
from tests.helpers import write

SEGMENT = 64 * 1024  # small segments: many checkpoints in a small tape
DEADLINE = 60  # seconds for any one test: a hang fails instead of blocking the run
CODE = "t3st-c0de-0000-0001"  # what the receivers of these tests print
WRONG_CODE = "t3st-c0de-0000-0002"


def make_tree(root: Path, seed: int, big: int = 0) -> Path:
    """A tree of about 1.4 MB (plus ``big`` bytes): sizes around block edges, a symlink."""
    rng = random.Random(seed)
    sizes = [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("block.bin", 512),
        ("block1.bin", 513),
        ("sub/mid.bin", 70_000),
        ("sub/deeper/large.bin", 400_000),
        ("sub/deeper/larger.bin", 900_000),
    ]
    if big:
        sizes.append(("sub/big.bin", big))
    for name, size in sizes:
        write(root / name, rng.randbytes(size))
    (root / "empty_dir").mkdir()
    (root / "link").symlink_to("one.bin")
    return root


async def full_play(tape: atartape.Tape) -> bytes:
    return b"".join([chunk async for chunk in atartape.TapePlayer(tape).chunks()])


async def read_bytes(path: Path | str) -> bytes:
    return await anyio.Path(path).read_bytes()


async def send_to(tape: atartape.Tape, port: int, **options: Any) -> atartape.transfer.SendResult:
    """:func:`send` to 127.0.0.1, with :data:`CODE` unless told otherwise."""
    if not options.get("insecure"):
        options.setdefault("code", CODE)
    return await send(tape, "127.0.0.1", port, **options)


class Receiving:
    """A :func:`receive` running in a task group; ``result`` or ``error`` once it ends."""

    def __init__(self) -> None:
        self.port = 0
        self.ready = anyio.Event()
        self.ended = anyio.Event()
        self.scope = anyio.CancelScope()
        self.result: atartape.transfer.ReceiveResult | None = None
        self.error: Exception | None = None

    @classmethod
    async def start(cls, tg: TaskGroup, out: Path, port: int = 0, **options: Any) -> Receiving:
        receiving = cls()
        if not options.get("insecure"):
            options.setdefault("code", CODE)

        def on_listening(host: str, port: int) -> None:
            receiving.port = port
            receiving.ready.set()

        async def run() -> None:
            try:
                with receiving.scope:
                    receiving.result = await receive(
                        out,
                        "127.0.0.1",
                        port,
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

    async def stop(self) -> None:
        """Stop it as a killed receiver stops (its files stay as they are)."""
        self.scope.cancel()
        await self.ended.wait()


@dataclass
class Fault:
    """What the proxy does to one connection.

    ``cut`` closes it after that many bytes, ``flip`` damages byte ``flip``, ``before`` cuts
    just before the first frame of that kind (plain connections only), ``stall`` stops
    forwarding (both ways, closing nothing) after that many bytes, ``pause`` holds the bytes
    after that many until the proxy's ``resume`` event. ``upstream`` picks the direction
    counted: sender to receiver (True) or back (False).
    """

    cut: int | None = None
    flip: int | None = None
    upstream: bool = True
    before: int | None = None
    stall: int | None = None
    pause: int | None = None


def frames_before(data: bytes, kind: int) -> int | None:
    """How many bytes of ``data`` (a preamble line, then frames) precede the first frame of
    ``kind``, whole or partial."""
    position = data.find(b"\n") + 1
    if position == 0:
        return None
    while position + 5 <= len(data):
        if data[position] == kind:
            return position
        position += 9 + int.from_bytes(data[position + 1 : position + 5], "big")
    return None


@dataclass
class FaultProxy:
    """Forwards connections on 127.0.0.1 to ``target``; connection ``i`` suffers ``plan[i]``."""

    target: int
    plan: list[Fault]
    receive_buffer: int | None = None  # SO_RCVBUF of the sockets the sender connects to
    connections: int = 0
    faults_done: int = 0
    port: int = 0
    stalled: anyio.Event = field(default_factory=anyio.Event)
    paused: anyio.Event = field(default_factory=anyio.Event)
    resume: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        if self.receive_buffer is not None:
            for one in listener.listeners:
                sock = one.extra(SocketAttribute.raw_socket)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
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
            silent = anyio.Event()
            async with upstream, anyio.create_task_group() as tg:
                up = fault if fault is not None and fault.upstream else None
                down = fault if fault is not None and not fault.upstream else None
                tg.start_soon(self._pump, client, upstream, up, tg, silent)
                tg.start_soon(self._pump, upstream, client, down, tg, silent)

    async def _pump(
        self,
        src: ByteStream,
        dst: ByteStream,
        fault: Fault | None,
        tg: TaskGroup,
        silent: anyio.Event,
    ) -> None:
        count = 0
        seen = b""
        try:
            async for chunk in src:
                if silent.is_set():
                    await anyio.sleep_forever()
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
                stall = fault.stall if fault is not None else None
                if stall is not None and count + len(chunk) >= stall:
                    await dst.send(chunk[: stall - count])
                    stop_reading(src)
                    silent.set()  # the other direction stops too
                    self.faults_done += 1
                    self.stalled.set()
                    await anyio.sleep_forever()  # read nothing more, close nothing
                pause = fault.pause if fault is not None else None
                if pause is not None and count + len(chunk) >= pause:
                    await dst.send(chunk[: pause - count])
                    self.faults_done += 1
                    self.paused.set()
                    await self.resume.wait()
                    chunk = chunk[pause - count :]
                    count = pause
                    fault = replace(fault, pause=None)
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


async def make_partial(tape: atartape.Tape, out: Path, cut: int, **options: Any) -> int:
    """Leave ``OUT.part`` as a receiver that was stopped after about ``cut`` bytes does."""
    second_segment = anyio.Event()

    def progress(position: int, total: int) -> None:
        # Frames are handled in order: a byte of the second segment is held only once the
        # first segment's digest was checked and its checkpoint written.
        if position > SEGMENT:
            second_segment.set()

    async with anyio.create_task_group() as tg:
        receiving = await Receiving.start(tg, out, progress=progress, **options)
        proxy = FaultProxy(receiving.port, [Fault(cut=cut)])
        port = await tg.start(proxy.run)
        with pytest.raises(TransferError, match="gave up"):
            await send_to(tape, port, retries=0, **options)
        await second_segment.wait()  # the receiver may still be reading what came before the cut
        tg.cancel_scope.cancel()
    assert receiving.result is None and receiving.error is None  # it was only stopped
    state = json.loads(await anyio.Path(f"{out}.part.state").read_text())
    assert state["verified"] > 0 and state["verified"] % SEGMENT == 0
    return int(state["verified"])


def stop_reading(stream: ByteStream) -> None:
    """Read nothing more from ``stream``: the peer's sends block once the buffers are full.

    Not calling ``receive()`` is enough on trio; an asyncio transport (uvloop's especially)
    may keep reading into memory until it is paused.
    """
    transport = getattr(stream, "_transport", None)
    if transport is not None and transport.is_reading():
        transport.pause_reading()


def dead_pid() -> int:
    """A process id no process has (above the kernel's largest)."""
    try:
        with open("/proc/sys/kernel/pid_max") as handle:
            return int(handle.read()) + 1000
    except OSError:  # pragma: no cover
        return 2**31 - 2


def file_mode(path: Path | str) -> int:
    return os.stat(path).st_mode & 0o777
