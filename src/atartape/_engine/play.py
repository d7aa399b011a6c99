"""The one async generator between a consumer and the producer, for events and bytes alike.

:func:`run` opens a play (a producer and its feed of rows), pulls one hop at a time from a worker
thread and hands the sink's items to the consumer. It is a plain async generator: the consumer
pulls, so backpressure is natural, and nothing is yielded from inside a task group or a cancel
scope. Closing it (``aclose()``, ``break`` inside ``aclosing``, cancellation) closes the open file
and the feed at once; no thread keeps reading for a consumer that left.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..format.header import BLOCK_SIZE, encode_raw
from .feed import Feed
from .index import Row
from .producer import Producer, md5
from .sinks import Sink
from .source import mismatch

T = TypeVar("T")

Session = Callable[[], Awaitable[tuple[Producer, Feed]]]
"""Opens a play: its producer and its feed (called inside the generator, on first use)."""


async def run(open_session: Session, sink: Sink[T]) -> AsyncGenerator[T, None]:
    """The items ``sink`` makes of the play that ``open_session`` opens."""
    producer, feed = await open_session()
    exhausted = False
    try:
        while True:
            if not exhausted and producer.wants_rows:
                batch = await feed.next_batch()
                producer.queue.extend(batch)
                exhausted = not batch
            if producer.next_is_stream():
                async with aclosing(_streamed_entry(producer, sink)) as items:
                    async for item in items:
                        yield item
                continue
            if producer.idle:
                break
            error = await anyio.to_thread.run_sync(producer.hop, sink)
            for item in sink.take() if error is None else sink.flush():
                yield item
            if error is not None:
                raise error
    finally:
        producer.close()
        with anyio.CancelScope(shield=True):  # closing must finish, even when cancelled
            await feed.aclose()
    window = producer.window
    at, length = window.footer_part
    if length:
        sink.footer(at, bytes(length))
    if window.end == window.total_size:
        sink.complete(window.total_size)
    for item in sink.flush():
        yield item


async def _streamed_entry(producer: Producer, sink: Sink[T]) -> AsyncGenerator[T, None]:
    """A whole entry whose content comes from an async iterable; its size is a promise too."""
    row: Row = producer.queue.popleft()
    chunks: AsyncIterable[bytes] = producer.streams[row.arc_path]
    sink.start(row, False)
    sink.piece(encode_raw(row.arc_path, row.kind, row.size, row.mode, row.mtime, row.linkname))
    digest = md5() if producer.md5 else None
    received = 0
    source: Any = chunks
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > row.size:
                raise mismatch(row, "size", f"stream gave more than its declared {row.size} bytes")
            if not chunk:
                continue
            if digest is not None:
                digest.update(chunk)
            sink.piece(bytes(chunk))
            for item in sink.take():
                yield item
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await close()
    if received != row.size:
        raise mismatch(
            row, "size", f"stream ended after {received} of its declared {row.size} bytes"
        )
    pad = -row.size % BLOCK_SIZE
    if pad:
        sink.piece(bytes(pad))
    sink.end(row, digest.hexdigest() if digest is not None else None)
    for item in sink.take():
        yield item
