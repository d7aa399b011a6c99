"""In-memory entries: add_bytes and add_stream, whose declared size is a promise."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import AsyncIterator, Iterable

import pytest

import atartape
from atartape.format.header import BLOCK_SIZE

pytestmark = pytest.mark.anyio

MTIME = 1_700_000_000


async def chunks_of(pieces: Iterable[bytes | bytearray | memoryview]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece  # type: ignore[misc]


async def play(tape: atartape.TarTape) -> tuple[list[atartape.TarEvent], bytes]:
    events = [e async for e in tape.stream()]
    return events, b"".join(e.data for e in events if e.type == "file_data")


async def sent_before_error(tape: atartape.TarTape) -> tuple[bytes, atartape.TarIntegrityError]:
    sent: list[bytes] = []
    with pytest.raises(atartape.TarIntegrityError) as info:
        async for event in tape.stream():
            sent.append(event.data)
    return b"".join(sent), info.value


async def test_streams_and_bytes_round_trip() -> None:
    tape = atartape.TarTape()
    content = bytes(range(256)) * 1000
    pieces = [content[:1], b"", bytearray(content[1:70_000]), memoryview(content[70_000:])]
    tape.add_stream("data/stream.bin", len(content), chunks_of(pieces), mode=0o600, mtime=MTIME)
    tape.add_stream("data/empty.bin", 0, chunks_of([]), mtime=MTIME)
    tape.add_bytes("data/small.txt", b"small", mtime=MTIME)
    events, data = await play(tape)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getnames() == ["data/empty.bin", "data/small.txt", "data/stream.bin"]
        assert tf.extractfile("data/stream.bin").read() == content  # type: ignore[union-attr]
        assert tf.getmember("data/stream.bin").mode == 0o600
        assert tf.getmember("data/stream.bin").mtime == MTIME
        assert tf.extractfile("data/empty.bin").read() == b""  # type: ignore[union-attr]
    ends = {e.entry.arc_path: e for e in events if e.type == "file_end" and e.entry}
    assert ends["data/stream.bin"].metadata.md5sum == hashlib.md5(content).hexdigest()
    for event in events:
        if event.type == "file_data":
            assert event.metadata.end_offset - event.metadata.start_offset == len(event.data)
            assert isinstance(event.data, bytes)


async def test_stream_longer_than_declared_stops_before_the_excess() -> None:
    tape = atartape.TarTape()
    tape.add_bytes("a.txt", b"first", mtime=MTIME)
    tape.add_stream("b.bin", 1000, chunks_of([b"x" * 600, b"y" * 600]), mtime=MTIME)
    sent, error = await sent_before_error(tape)
    assert error.arc_path == "b.bin" and "more than" in str(error)
    b_start = 2 * BLOCK_SIZE
    assert len(sent) <= b_start + BLOCK_SIZE + 1000  # never a byte past the declared size
    assert b"y" not in sent[b_start:]

    exact_then_more = atartape.TarTape()
    exact_then_more.add_stream("c.bin", 10, chunks_of([b"0123456789", b"!"]), mtime=MTIME)
    sent, error = await sent_before_error(exact_then_more)
    assert sent == sent[:BLOCK_SIZE] + b"0123456789"  # the content, not the padding
    assert len(sent) == BLOCK_SIZE + 10


async def test_stream_shorter_than_declared_stops_before_the_padding() -> None:
    tape = atartape.TarTape()
    tape.add_stream("short.bin", 100, chunks_of([b"z" * 60]), mtime=MTIME)
    tape.add_bytes("zz.txt", b"after", mtime=MTIME)
    sent, error = await sent_before_error(tape)
    assert "ended after 60" in str(error) and error.arc_path == "short.bin"
    assert len(sent) == BLOCK_SIZE + 60


async def test_add_stream_checks_its_arguments() -> None:
    tape = atartape.TarTape()
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="non-negative int"):
            tape.add_stream("x.bin", bad, chunks_of([]))  # type: ignore[arg-type]
    with pytest.raises(atartape.PathConstraintError):
        tape.add_stream("/abs.bin", 0, chunks_of([]))
    with pytest.raises(atartape.PathConstraintError):
        tape.add_bytes("a/../b", b"")
    tape.add_stream("dup", 0, chunks_of([]))
    tape.add_bytes("dup", b"")
    with pytest.raises(atartape.TarTapeError, match="added twice"):
        await play(tape)


async def test_stream_listed_in_the_embedded_index() -> None:
    from atartape.archive import open_archive
    from tests.helpers import MemorySource

    tape = atartape.TarTape(embed_index=True)
    tape.add_stream("log/generated.csv", 7, chunks_of([b"a,b\n", b"1,2"]), mtime=MTIME)
    _, data = await play(tape)
    async with open_archive(MemorySource(data)) as archive:
        index = await archive.embedded_index()
        assert index is not None and [(r.name, r.size) for r in index] == [("log/generated.csv", 7)]
        assert await archive.read("log/generated.csv") == b"a,b\n1,2"
