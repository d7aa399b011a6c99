"""Send a tape to a receiver over TCP on trio, through a link that drops, and resume each time.

    python examples/trio_transfer.py

One trio program plays both parts of :mod:`atartape.transfer` on 127.0.0.1: a receiver
(``receive``) writing ``dataset.tar``, and a sender (``send``) that reaches it through a small
proxy which cuts the connection three times. After each cut the sender reconnects, the receiver
states how many bytes it holds, and the stream continues from that byte. At the end both sides
agree on the size and the digest, the file is renamed into place, and the program checks that
it equals a full play of the tape, then exits 0. Everything lives in a temporary folder.

The same tool from the shell, on two machines::

    atartape receive dataset.tar --port 9000             # on the receiving machine
    atartape send ./dataset receiver.example:9000        # on the sending machine
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import trio

import atartape
from atartape import transfer


def make_folder(root: Path) -> None:
    """A small folder: a few files of random bytes, nested."""
    rng = random.Random(1)
    for name, size in [("readme.txt", 200), ("data/a.bin", 300_000), ("data/b/c.bin", 900_000)]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))


async def flaky_link(listen: trio.SocketListener, target_port: int, cuts: list[int]) -> None:
    """Forward connections to the receiver; connection ``i`` is cut after ``cuts[i]`` bytes."""
    connection = 0
    while True:
        client = await listen.accept()
        limit = cuts[connection] if connection < len(cuts) else None
        connection += 1
        upstream = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with client, upstream, trio.open_nursery() as nursery:

            async def pump(
                src: trio.SocketStream, dst: trio.SocketStream, limit: int | None
            ) -> None:
                count = 0
                try:
                    while data := await src.receive_some(65536):
                        if limit is not None and count + len(data) >= limit:
                            await dst.send_all(data[: limit - count])
                            print(f"link: cut after {limit} bytes")
                            break
                        await dst.send_all(data)
                        count += len(data)
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, upstream, limit)
            nursery.start_soon(pump, upstream, client, None)


async def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "dataset"
        make_folder(folder)
        tape = await atartape.record(folder)
        out = Path(temp) / "received" / "dataset.tar"
        out.parent.mkdir()
        print(f"tape {tape.name!r}: {tape.total_size} bytes, fingerprint {tape.fingerprint[:16]}")

        async with trio.open_nursery() as nursery:
            # The receiver picks a free port and says which.
            receiver_port: list[int] = []
            listening = trio.Event()

            def on_listening(host: str, port: int) -> None:
                receiver_port.append(port)
                listening.set()

            received: list[transfer.ReceiveResult] = []
            done = trio.Event()

            async def run_receiver() -> None:
                result = await transfer.receive(
                    out, "127.0.0.1", 0, segment_size=256 * 1024, on_listening=on_listening
                )
                received.append(result)
                done.set()

            nursery.start_soon(run_receiver)
            await listening.wait()

            # A link that drops three times on the way.
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            link_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(flaky_link, listeners[0], receiver_port[0], [150_000, 1, 400_000])

            sent = await transfer.send(
                tape, "127.0.0.1", link_port, source_root=folder, backoff=0.05
            )
            await done.wait()  # the receiver returns once the sender said goodbye
            nursery.cancel_scope.cancel()

        got = received[0]
        print(
            f"sent {sent.bytes_sent} bytes over {sent.connections} connections; "
            f"the receiver kept {got.bytes_received} (it never keeps a byte twice)"
        )
        assert sent.digest == got.digest, "both sides agree on the digest"
        full = b"".join([chunk async for chunk in atartape.TapePlayer(tape).chunks()])
        assert out.read_bytes() == full, "the received file is byte-identical to a full play"
        assert not os.path.exists(f"{out}.part")
        print(f"ok: {out.name} is byte-identical to the tape (digest {got.digest[:16]}...)")


if __name__ == "__main__":
    trio.run(main)
