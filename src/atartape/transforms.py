"""The transforms behind a tape's views (see :mod:`atartape.views`): seekable zstd and age,
made once when the tape is recorded and replayed at any byte when it is played.

Recording learns each frame's compressed size and tag and the digest of each sealed block's tags,
and writes the file key beside the index. Playing makes a frame or a block again and sends it
only when it is the very one recorded: another zstd build is refused
(:class:`~atartape.ViewError`), a source that changed under the same size and mtime is refused
(:class:`~atartape.TarIntegrityError`) before a nonce could be reused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from ._engine.index import Index
from .errors import InvalidArgumentError, TapeFormatError, TarIntegrityError, ViewError
from .format import age, zstd_seekable
from .format.units import parse_size
from .views import DEFAULT_FRAME_SIZE, key_path

__all__ = [
    "ByteSource",
    "RecordedViews",
    "ViewOptions",
    "age_chunks",
    "key_file_bytes",
    "opened_seal",
    "read_keys",
    "record_views",
    "unseal_key",
    "view_source",
    "write_chunks",
    "zstd_chunks",
]

_KEY_MARK = b"atartape-age-file-key-1\n"
_BATCH = 256  # frames or blocks looked up at once

ByteSource = Callable[[int, int], AsyncGenerator[bytes, None]]


@dataclass(frozen=True)
class ViewOptions:
    """How a tape's views are made when it is recorded (see :func:`atartape.record`)."""

    compress: str | None = None
    level: int = zstd_seekable.DEFAULT_LEVEL
    frame_size: int | str = DEFAULT_FRAME_SIZE
    seal: Sequence[str] = ()
    passphrase: str | bytes | None = None
    work_factor: int = age.DEFAULT_WORK_FACTOR

    def __post_init__(self) -> None:
        if self.compress not in (None, "zstd"):
            raise InvalidArgumentError(f"compress must be 'zstd' or None, not {self.compress!r}")
        if self.seal and self.passphrase is not None:
            raise InvalidArgumentError(
                "seal for recipients or with a passphrase, not both (age's rule)"
            )
        size = parse_size(self.frame_size, what="frame size")
        if not 4096 <= size <= 256 * 1024 * 1024:
            raise InvalidArgumentError(f"frame size {size} is outside 4KiB to 256MiB")

    @property
    def sealed(self) -> bool:
        return bool(self.seal) or self.passphrase is not None

    @property
    def wanted(self) -> bool:
        return self.compress is not None or self.sealed

    def recipients(self) -> list[age.X25519Recipient | age.ScryptRecipient]:
        """The age recipients, parsed; ``ValueError`` for one that is not an ``age1…`` key."""
        if self.passphrase is not None:
            secret = (
                self.passphrase.encode() if isinstance(self.passphrase, str) else self.passphrase
            )
            return [age.ScryptRecipient(secret, self.work_factor)]
        try:
            return [age.parse_recipient(text) for text in self.seal]
        except age.SealError as exc:
            raise InvalidArgumentError(f"bad age recipient: {exc}") from None


# ----------------------------------------------------------------------------- recording


@dataclass
class RecordedViews:
    """What recording a tape's views made: their meta, the rows of the compressed frames and
    of the sealed blocks, and the file key of the seal (to keep beside the index)."""

    meta: dict[str, Any]
    frames: list[tuple[int, int, int, int | None, bytes]]
    blocks: list[tuple[int, bytes]]
    file_key: bytes | None


async def record_views(
    plain: ByteSource, plain_size: int, options: ViewOptions, fingerprint: str
) -> RecordedViews:
    """Make the views of a tape of ``plain_size`` bytes whose bytes ``plain`` gives, reading
    the whole tape once. Everything but the seal is a function of the tape (``fingerprint``
    names it): an unchanged folder recorded again gets the same compressed view."""
    frame_size = parse_size(options.frame_size, what="frame size")
    views: dict[str, Any] = {}
    frames: list[tuple[int, int, int, int | None, bytes]] = []
    blocks: list[tuple[int, bytes]] = []
    step = frame_size if options.compress else age.BLOCK_SIZE
    params = zstd_seekable.FrameParams.current(options.level) if options.compress else None
    tag_key = zstd_seekable.frame_tag_key(fingerprint)
    digester: _BlockSealer | None = None
    file_key = prefix = None
    if options.sealed:
        file_key = age.generate_file_key()
        # scrypt (a passphrase) takes seconds of one thread: never on the event loop
        prefix = await anyio.to_thread.run_sync(age.make_header, file_key, options.recipients())
        digester = _BlockSealer(file_key, prefix)
    offset = 0
    count = zstd_seekable.frame_count(plain_size, step)
    async with aclosing(_pieces(plain, 0, plain_size, step)) as pieces:
        for index in range(count):
            start, end = zstd_seekable.frame_plain_range(index, plain_size, step)
            data = await _next_piece(pieces, end - start)
            if params is not None:
                frame, digest = await anyio.to_thread.run_sync(
                    _made_frame, index, data, params, tag_key
                )
                checksum = zstd_seekable.frame_checksum(frame) if params.checksum else None
                frames.append((index, offset, len(frame), checksum, digest))
                offset += len(frame)
                data = frame
            if digester is not None:
                await anyio.to_thread.run_sync(digester.feed, data)
    if params is not None:
        entries = [_seek_entry(row, plain_size, frame_size) for row in frames]
        table = zstd_seekable.encode_seek_table(entries, params.checksum)
        views["zstd"] = {
            "params": params.encode(),
            "frame_size": frame_size,
            "frames": count,
            "checksums": params.checksum,
            "tag_key": tag_key.hex(),  # frame tags (see zstd_seekable.frame_tag_key)
            "size": offset + len(table),
            "digest": _rows_digest(frames),
        }
        if digester is not None:
            await anyio.to_thread.run_sync(digester.feed, table)
    if digester is not None and prefix is not None and file_key is not None:
        blocks = await anyio.to_thread.run_sync(digester.finish)
        inner = views["zstd"]["size"] if "zstd" in views else plain_size
        views["age"] = {
            "prefix": prefix.hex(),
            "over": "zstd" if "zstd" in views else "plain",
            "size": age.sealed_size(len(prefix), inner),
            "guard": "tags",  # block digests of the chunks' tags (see age.seal_block)
            "digest": _rows_digest(blocks),
        }
    return RecordedViews(views, frames, blocks, file_key)


def _seek_entry(row: Sequence[Any], plain_size: int, frame_size: int) -> zstd_seekable.SeekEntry:
    """The seek-table entry of a frame row ``(frame, offset, size, checksum, digest)``."""
    frame, _, size, checksum, _ = row
    lo, hi = zstd_seekable.frame_plain_range(frame, plain_size, frame_size)
    return zstd_seekable.SeekEntry(size, hi - lo, checksum)


class _BlockSealer:
    """The digests of the sealed blocks of a stream fed in pieces (see :func:`age.seal_block`);
    the last block is sealed as the final one when the stream is finished."""

    def __init__(self, file_key: bytes, prefix: bytes) -> None:
        self.key = age.check_file_key(prefix, file_key).payload_key()
        self.digest_key = age.block_digest_key(file_key, prefix[-age.NONCE_SIZE :])
        self.pending = bytearray()
        self.rows: list[tuple[int, bytes]] = []

    def _seal(self, block: bytes, final: bool) -> None:
        _, digest = age.seal_block(self.key, self.digest_key, len(self.rows), block, final)
        self.rows.append((len(self.rows), digest))

    def feed(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) > age.BLOCK_SIZE:  # the block that ends the stream waits
            self._seal(bytes(self.pending[: age.BLOCK_SIZE]), final=False)
            del self.pending[: age.BLOCK_SIZE]

    def finish(self) -> list[tuple[int, bytes]]:
        self._seal(bytes(self.pending), final=True)
        self.pending.clear()
        return self.rows


def _rows_digest(rows: Sequence[tuple[Any, ...]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(row).encode())
    return digest.hexdigest()


def key_file_bytes(*file_keys: bytes) -> bytes:
    """What a key file holds (see :func:`key_path`): the file keys, newest first, one a line."""
    return _KEY_MARK + b"".join(key.hex().encode() + b"\n" for key in file_keys)


def read_keys(path: str) -> list[bytes]:
    """The file keys kept at ``path``, newest first; ``[]`` when there is no file (synchronous).

    A recording keeps the key of the recording before it on the second line: a play that
    opened the previous index a moment before the new one replaced it still finds its key.
    """
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    if not text.startswith(_KEY_MARK):
        raise ViewError(f"{path} is not an atartape key file")
    try:
        return [bytes.fromhex(line) for line in text[len(_KEY_MARK) :].decode().split()]
    except ValueError:
        raise ViewError(f"{path} is damaged") from None


# ----------------------------------------------------------------------------- playing


def opened_seal(meta: Mapping[str, Any], file_key: bytes) -> age.OpenedHeader:
    """The payload key of a sealed tape, once ``file_key`` proved to be its own."""
    prefix = bytes.fromhex(meta["views"]["age"]["prefix"])
    try:
        return age.check_file_key(prefix, file_key)
    except age.SealError:
        raise ViewError("the key does not open this tape's seal (another tape's key?)") from None


async def unseal_key(
    meta: Mapping[str, Any], index_path: str, identity: str | bytes | None
) -> bytes:
    """The file key of a sealed tape: from ``identity`` (an ``AGE-SECRET-KEY-1…`` identity or
    the passphrase), else from the key file beside the index. Raises :class:`ViewError`."""
    prefix = bytes.fromhex(meta["views"]["age"]["prefix"])
    if identity is not None:
        identities: list[age.X25519Identity | age.ScryptIdentity]
        text = identity.decode() if isinstance(identity, bytes) else identity
        if text.startswith("AGE-SECRET-KEY-1"):
            identities = [age.parse_identity(text)]
        else:
            secret = identity if isinstance(identity, bytes) else identity.encode()
            identities = [age.ScryptIdentity(secret)]
        try:
            opened = await anyio.to_thread.run_sync(age.open_header, prefix, identities)
        except age.SealError as exc:
            raise ViewError(f"the identity does not open this tape's seal ({exc})") from None
        return opened.file_key
    keys = await anyio.to_thread.run_sync(read_keys, key_path(index_path))
    if not keys:
        raise ViewError(
            f"no key to seal this tape: {key_path(index_path)} is missing (pass age_identity=, "
            "an age identity or the passphrase, to play it elsewhere)"
        )
    for key in keys:
        try:
            age.check_file_key(prefix, key)
        except age.SealError:
            continue
        return key
    raise ViewError(
        f"the key in {key_path(index_path)} does not open this tape's seal (another tape's key?)"
    )


async def zstd_chunks(
    index: Index, meta: Mapping[str, Any], plain: ByteSource, start: int, end: int
) -> AsyncGenerator[bytes, None]:
    """The compressed bytes ``[start, end)``: each frame made again and sent only if it is the
    frame recorded (size and tag), then the seek table from the recorded rows. The tar under
    the frames is played once, from the first frame needed on."""
    zv = meta["views"]["zstd"]
    params = zstd_seekable.FrameParams.parse(zv["params"])
    frame_size, count, checksums = zv["frame_size"], zv["frames"], zv["checksums"]
    tag_key = bytes.fromhex(zv["tag_key"]) if "tag_key" in zv else None
    plain_size: int = meta["total_size"]
    table_size = zstd_seekable.seek_table_size(count, checksums)
    table_at = zv["size"] - table_size
    stop = min(end, table_at)
    if start < stop:
        rows = await index.frames_from(start, _BATCH)
        if not rows:
            raise ViewError(f"the index {index.where} lacks the frames of its compressed view")
        expected = int(rows[0][0])
        first_lo = zstd_seekable.frame_plain_range(expected, plain_size, frame_size)[0]
        async with aclosing(_pieces(plain, first_lo, plain_size, frame_size)) as frames:
            position = start
            while position < stop:
                rows = rows or await index.frames(expected, min(expected + _BATCH, count))
                if not rows or rows[0][0] != expected:
                    raise ViewError(f"the index {index.where} lacks frame {expected}")
                for frame, at, size, checksum, digest in rows:
                    if frame != expected:
                        raise ViewError(f"the index {index.where} lacks frame {expected}")
                    if at >= stop:
                        break
                    lo, hi = zstd_seekable.frame_plain_range(frame, plain_size, frame_size)
                    data = await _next_piece(frames, hi - lo)
                    made, tag = await anyio.to_thread.run_sync(
                        _made_frame, frame, data, params, tag_key
                    )
                    if len(made) != size or not hmac.compare_digest(tag, bytes(digest)):
                        if checksum is not None and zstd_seekable.frame_checksum(made) != checksum:
                            raise TarIntegrityError(
                                f"bytes {lo} to {hi} of the tape differ from those compressed "
                                "when it was recorded (a file rewritten with its size and mtime "
                                "put back?): nothing of them was sent",
                                reason="content",
                            )
                        raise ViewError(
                            f"frame {frame} compresses to other bytes than when the tape was "
                            f"recorded (zstd {params.zstd_version} then, another build now): "
                            "refused, nothing of it was sent"
                        )
                    yield made[max(position - at, 0) : min(stop, at + size) - at]
                    position, expected = at + size, frame + 1
                rows = []
    if end > table_at:
        first = max(start, table_at) - table_at
        last = end - table_at
        wanted = zstd_seekable.seek_table_entries_for_range(first, last, count, checksums)
        found = await index.frames(wanted.start, wanted.stop) if len(wanted) else []
        entries = [_seek_entry(row, plain_size, frame_size) for row in found]
        yield zstd_seekable.encode_seek_table_range(first, last, count, checksums, entries)


async def _pieces(
    source: ByteSource, start: int, end: int, size: int
) -> AsyncGenerator[bytes, None]:
    """Bytes ``[start, end)`` of ``source``, from one play of it, in pieces of ``size`` bytes
    (the last one may be shorter)."""
    held: list[memoryview] = []
    count = 0
    async with aclosing(source(start, end)) as chunks:
        async for chunk in chunks:
            view = memoryview(chunk)
            while len(view) >= size - count:
                held.append(view[: size - count])
                view = view[size - count :]
                yield b"".join(held)
                held, count = [], 0
            if view:
                held.append(view)
                count += len(view)
    if held:
        yield b"".join(held)


async def _next_piece(pieces: AsyncGenerator[bytes, None], size: int) -> bytes:
    """The next piece, which must have ``size`` bytes (a source ending early is a bug)."""
    piece = await anext(pieces, b"")
    if len(piece) != size:
        raise ViewError(f"the tape gave {len(piece)} bytes where {size} were due")
    return piece


def _made_frame(
    index: int, data: bytes, params: zstd_seekable.FrameParams, tag_key: bytes | None
) -> tuple[bytes, bytes]:
    """Frame ``index`` with the level and flags of ``params``, by whatever zstd build runs now,
    and its tag (what decides, when a tape plays, whether the bytes are the recorded ones; a
    BLAKE2b digest for tapes recorded before tags)."""
    now = zstd_seekable.FrameParams.current(params.level, checksum=params.checksum)
    made = zstd_seekable.compress_frame(data, now)
    if tag_key is None:
        return made, zstd_seekable.frame_digest(made)
    return made, zstd_seekable.frame_tag(tag_key, index, made)


async def age_chunks(
    index: Index,
    meta: Mapping[str, Any],
    inner: ByteSource,
    file_key: bytes,
    start: int,
    end: int,
) -> AsyncGenerator[bytes, None]:
    """The sealed bytes ``[start, end)`` of ``inner`` (the tar, or its compressed view): each
    1 MiB block checked against its recorded digest before any chunk of it is sealed."""
    av = meta["views"]["age"]
    if av.get("guard") != "tags":
        raise ViewError(
            "this tape was sealed by an earlier atartape, whose guard against nonce reuse is "
            "another: record it again"
        )
    prefix = bytes.fromhex(av["prefix"])
    opened = opened_seal(meta, file_key)
    payload = opened.payload_key()
    digest_key = age.block_digest_key(file_key, prefix[-age.NONCE_SIZE :])
    inner_size = age.plain_size_of(len(prefix), av["size"])
    layout = age.SealedLayout(len(prefix), inner_size)
    if start < min(end, len(prefix)):
        yield prefix[start : min(end, len(prefix))]
    if end <= len(prefix):
        return
    chunks = layout.chunks_for_sealed_range(max(start, len(prefix)), end)
    blocks = layout.blocks_for_chunks(chunks)
    if not blocks:
        return
    inner_lo = layout.block_plain_range(blocks.start)[0]
    inner_hi = layout.block_plain_range(blocks.stop - 1)[1]
    # The bytes under the blocks come from one play: a play per block would start over (open
    # the index, find the entry, check its file) 1,024 times per GiB.
    async with aclosing(_pieces(inner, inner_lo, inner_hi, age.BLOCK_SIZE)) as pieces:
        for first in range(blocks.start, blocks.stop, _BATCH):
            stop = min(first + _BATCH, blocks.stop)
            digests = await index.block_digests(first, stop)
            for block in range(first, stop):
                lo, hi = layout.block_plain_range(block)
                data = await _next_piece(pieces, hi - lo)
                if block not in digests:
                    raise TapeFormatError(
                        f"the index {index.where} lacks the digest of sealed block {block}"
                    )
                sealed_lo, sealed_hi = layout.block_sealed_range(block)
                w0, w1 = max(start, sealed_lo), min(end, sealed_hi)
                window = await anyio.to_thread.run_sync(
                    _sealed_window,
                    payload,
                    digest_key,
                    layout,
                    block,
                    data,
                    w0 - sealed_lo,
                    w1 - sealed_lo,
                    digests[block],
                )
                if window is None:
                    raise TarIntegrityError(
                        f"bytes {lo} to {hi} of the tape differ from those sealed when it was "
                        "recorded (a file rewritten with its size and mtime put back?): nothing "
                        "sealed from them was sent",
                        reason="content",
                    )
                if window:
                    yield window


def _sealed_window(
    key: age.PayloadKey,
    digest_key: bytes,
    layout: age.SealedLayout,
    block: int,
    plain: bytes,
    start: int,
    end: int,
    recorded: bytes,
) -> bytes | None:
    """Bytes ``[start, end)`` of sealed block ``block``, or ``None`` when the block does not
    seal to its recorded digest (nothing of it may leave)."""
    chunks, digest = age.seal_block(
        key, digest_key, block, plain, final=block == layout.block_count - 1
    )
    if not hmac.compare_digest(digest, recorded):
        return None
    pieces: list[bytes | memoryview] = []
    at = 0
    for chunk in chunks:
        lo, hi = max(start - at, 0), min(end - at, len(chunk))
        if lo < hi:
            pieces.append(chunk if hi - lo == len(chunk) else memoryview(chunk)[lo:hi])
        at += len(chunk)
    return b"".join(pieces)


def view_source(
    index_opener: Callable[[], Awaitable[Index]],
    meta: Mapping[str, Any],
    view: str,
    plain: ByteSource,
    file_key: bytes | None,
) -> ByteSource:
    """The bytes of ``view``, as a function of ``(start, end)`` like ``plain``."""

    def compressed(start: int, end: int) -> AsyncGenerator[bytes, None]:
        return _with_index(index_opener, lambda index: zstd_chunks(index, meta, plain, start, end))

    if view == "plain":
        return plain
    if view == "zstd":
        return compressed
    inner = compressed if view == "zstd+age" else plain
    assert file_key is not None

    def sealed(start: int, end: int) -> AsyncGenerator[bytes, None]:
        return _with_index(
            index_opener, lambda index: age_chunks(index, meta, inner, file_key, start, end)
        )

    return sealed


async def _with_index(
    opener: Callable[[], Awaitable[Index]],
    make: Callable[[Index], AsyncGenerator[bytes, None]],
) -> AsyncGenerator[bytes, None]:
    index = await opener()
    try:
        async with aclosing(make(index)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        await index.aclose()


async def write_chunks(source: AsyncGenerator[bytes, None], fd: int) -> int:
    """Write every chunk of ``source`` to ``fd`` from worker threads; the bytes written."""
    written = 0
    async with aclosing(source) as chunks:
        async for chunk in chunks:
            await anyio.to_thread.run_sync(_write_all, fd, chunk)
            written += len(chunk)
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            import select

            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll()
