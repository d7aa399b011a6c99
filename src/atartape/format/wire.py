"""The wire protocol of :mod:`atartape.transfer`: framing, messages and the segment digest chain.

Pure code, no I/O: the transfer moves these frames over its connections. Every frame is::

    kind (1 byte) | length (4 bytes, big-endian) | payload (length bytes) | CRC-32 (4 bytes)

where the CRC-32 covers the kind, the length and the payload. A frame whose CRC does not match,
whose kind is unknown or whose length is over :data:`MAX_PAYLOAD` is a
:class:`~atartape.errors.TransferProtocolError`:
the connection is dropped and nothing of that frame is kept. ``DATA`` payloads are the stream
offset of their first byte (8 bytes, big-endian) followed by the bytes; ``PING`` is empty; every
other kind carries a small UTF-8 JSON object.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
import zlib
from typing import Any

from ..errors import TransferProtocolError

PROTOCOL = "atartape-transfer/1"
MAX_PAYLOAD = 4 * 1024 * 1024 + 8  # a DATA frame holds at most 4 MiB
MAX_CONTROL = 64 * 1024  # a JSON message is small

_HEAD = struct.Struct("!BI")
_CRC = struct.Struct("!I")
_OFFSET = struct.Struct("!Q")


class Kind(enum.IntEnum):
    """Frame kinds, in the order a session uses them."""

    HELLO = 1  # receiver -> sender: protocol, fingerprint held (or null), offset held
    OFFER = 2  # sender -> receiver: protocol, fingerprint, total_size, name
    START = 3  # receiver -> sender: offset, segment, segment_size, chain
    DATA = 4  # sender -> receiver: offset + bytes
    SEGMENT = 5  # sender -> receiver: index, sha256 of that segment
    END = 6  # sender -> receiver: every byte and segment digest has been sent
    DONE = 7  # receiver -> sender: size and chain digest of the file it holds
    VERDICT = 8  # sender -> receiver: ok, the sender's own chain digest
    FINISHED = 9  # receiver -> sender: the file is in place (digest); also answers an OFFER
    ERROR = 10  # either way: code, message; the session stops for good
    PING = 11  # either way, while one side is busy verifying: keeps the idle timeout off
    BYE = 12  # sender -> receiver: FINISHED arrived; the receiver may stop listening


def encode_frame(kind: Kind, payload: bytes) -> bytes:
    """One whole frame: header, payload and CRC-32."""
    head = _HEAD.pack(kind, len(payload))
    return head + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


def encode_data(offset: int, data: bytes) -> bytes:
    """A ``DATA`` frame carrying ``data``, whose first byte is at ``offset`` of the stream."""
    return encode_frame(Kind.DATA, _OFFSET.pack(offset) + data)


def decode_data(payload: bytes) -> tuple[int, memoryview]:
    """Split a ``DATA`` payload into its offset and its bytes (a view, not a copy)."""
    if len(payload) < _OFFSET.size:
        raise TransferProtocolError("DATA frame too short")
    (offset,) = _OFFSET.unpack_from(payload)
    return offset, memoryview(payload)[_OFFSET.size :]


def encode_message(kind: Kind, **fields: Any) -> bytes:
    """A control frame whose payload is ``fields`` as compact JSON."""
    return encode_frame(kind, json.dumps(fields, separators=(",", ":")).encode())


def decode_message(kind: Kind, payload: bytes) -> dict[str, Any]:
    """The JSON object of a control frame; :class:`TransferProtocolError` if it is not one."""
    if len(payload) > MAX_CONTROL:
        raise TransferProtocolError(f"{kind.name} message of {len(payload)} bytes is too large")
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise TransferProtocolError(f"{kind.name} message is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TransferProtocolError(f"{kind.name} message is not a JSON object")
    return value


HEAD_SIZE = _HEAD.size
CRC_SIZE = _CRC.size


def decode_head(head: bytes) -> tuple[Kind, int]:
    """The kind and payload length of a frame from its first :data:`HEAD_SIZE` bytes.

    Raises :class:`TransferProtocolError` for an unknown kind or a length over :data:`MAX_PAYLOAD`.
    """
    raw_kind, length = _HEAD.unpack(head)
    try:
        kind = Kind(raw_kind)
    except ValueError:
        raise TransferProtocolError(
            f"unknown frame kind {raw_kind}: the peer does not speak {PROTOCOL}"
        ) from None
    if length > MAX_PAYLOAD:
        raise TransferProtocolError(f"{kind.name} frame of {length} bytes exceeds {MAX_PAYLOAD}")
    return kind, length


def check_frame(kind: Kind, head: bytes, payload: bytes, crc: bytes) -> None:
    """Raise :class:`TransferProtocolError` unless ``crc`` is the CRC-32 of the frame."""
    (expected,) = _CRC.unpack(crc)
    if zlib.crc32(payload, zlib.crc32(head)) != expected:
        raise TransferProtocolError(f"{kind.name} frame failed its CRC-32 check")


def get_int(message: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    """``message[key]`` as an int of at least ``minimum``; else :class:`TransferProtocolError`."""
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TransferProtocolError(f"field {key!r} must be an integer >= {minimum}, not {value!r}")
    return value


def get_str(message: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    """``message[key]`` as a str (``None`` if ``optional``); else :class:`TransferProtocolError`."""
    value = message.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TransferProtocolError(f"field {key!r} must be a string, not {value!r}")
    return value


def segment_count(total_size: int, segment_size: int) -> int:
    """How many segments of ``segment_size`` cover a stream of ``total_size`` bytes."""
    return -(-total_size // segment_size)


def segment_end(index: int, total_size: int, segment_size: int) -> int:
    """Offset just past segment ``index``."""
    return min((index + 1) * segment_size, total_size)


def chain_seed(total_size: int, segment_size: int) -> bytes:
    """The chain value before the first segment; it binds the total size and segment size."""
    return hashlib.sha256(
        PROTOCOL.encode() + b"\0" + _OFFSET.pack(total_size) + _OFFSET.pack(segment_size)
    ).digest()


def chain_next(chain: bytes, segment_digest: bytes) -> bytes:
    """The chain value after one more segment: ``sha256(chain || sha256(segment))``."""
    return hashlib.sha256(chain + segment_digest).digest()


def chain_of(segment_digests: list[bytes], total_size: int, segment_size: int) -> bytes:
    """The chain digest over the given segment digests, in order, from the seed."""
    chain = chain_seed(total_size, segment_size)
    for digest in segment_digests:
        chain = chain_next(chain, digest)
    return chain
