"""The wire protocol of :mod:`atartape.transfer`: preamble, frames, messages, the proofs of the
code and the segment digest chain.

Pure code, no I/O: the transfer moves these bytes over its connections.

A connection opens with one **preamble** line each way, in the clear: the sender's first, then
the receiver's (:func:`preamble`, :func:`parse_preamble`). It names the protocol and the mode,
``tls`` (the default: what follows is TLS 1.3, then frames) or ``plain`` (frames in the clear,
``--insecure``). Neither side ever changes its mode to match the other's: a mismatch is refused.
A peer whose first bytes are not a preamble is not an atartape peer, which is told at once.

Every frame is::

    kind (1 byte) | length (4 bytes, big-endian) | payload (length bytes) | CRC-32 (4 bytes)

where the CRC-32 covers the kind, the length and the payload. A frame whose CRC does not match,
whose kind is unknown or whose length is over :data:`MAX_PAYLOAD` is a
:class:`~atartape.errors.TransferProtocolError`: the connection is dropped and nothing of that
frame is kept. ``DATA`` payloads are the stream offset of their first byte (8 bytes, big-endian)
followed by the bytes; ``PING`` is empty; every other kind carries a small UTF-8 JSON object.

A **refusal** is an ``ERROR`` frame whose ``code`` is ``"refused"``; it also names its
``reason`` (one of :class:`Refusal`) and, for a damaged partial file, the ``offset`` where it
stops matching (:func:`encode_refusal`, :func:`decode_refusal`). The fields were added to the
``ERROR`` frame of protocol 2 rather than given a frame kind of their own, so that both
generations read each other: a peer that predates them still stops on a refusal and shows its
one-line text, and a refusal without a reason (or with one this version does not know) is read
as :attr:`Refusal.OTHER` with the peer's text.

The proofs of the code (``AUTH``, ``WELCOME``) are HMAC-SHA256 under a key stretched from the
code with scrypt, over the SHA-256 of the receiver's TLS certificate and one fresh nonce from
each side (:func:`code_key`, :func:`auth_proof`); :mod:`atartape.transfer.security` says why.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import hmac
import json
import struct
import zlib
from typing import Any

from ..errors import InvalidArgumentError, TransferProtocolError

__all__ = [
    "CODE_ALPHABET",
    "CODE_BYTES",
    "CODE_LENGTH",
    "CRC_SIZE",
    "HEAD_SIZE",
    "MAX_CONTROL",
    "MAX_PAYLOAD",
    "MODES",
    "NONCE_SIZE",
    "PREAMBLE_MAGIC",
    "PREAMBLE_MAX",
    "PROOF_SIZE",
    "PROTOCOL",
    "Kind",
    "PeerRefusal",
    "Refusal",
    "SegmentHasher",
    "auth_proof",
    "chain_next",
    "chain_of",
    "chain_seed",
    "check_frame",
    "code_key",
    "decode_data",
    "decode_head",
    "decode_message",
    "decode_refusal",
    "encode_data",
    "encode_frame",
    "encode_message",
    "encode_refusal",
    "format_code",
    "get_hex",
    "get_int",
    "get_str",
    "normalize_code",
    "parse_preamble",
    "preamble",
    "preamble_prefix_ok",
    "proof_matches",
    "segment_count",
    "segment_end",
]

PROTOCOL = "atartape-transfer/2"
MAX_PAYLOAD = 4 * 1024 * 1024 + 8  # a DATA frame holds at most 4 MiB
MAX_CONTROL = 64 * 1024  # a JSON message is small

_HEAD = struct.Struct("!BI")
_CRC = struct.Struct("!I")
_OFFSET = struct.Struct("!Q")


class Kind(enum.IntEnum):
    """Frame kinds, in the order a session uses them."""

    HELLO = 1  # receiver -> sender: protocol, auth ("code" or "none"), nonce
    OFFER = 2  # sender -> receiver: protocol, fingerprint, identity, total_size, name
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
    AUTH = 13  # sender -> receiver: nonce, proof that the sender knows the code
    WELCOME = 14  # receiver -> sender: proof that the receiver knows the code


class Refusal(enum.Enum):
    """Why a receiver refuses a sender: the ``reason`` of a refusal."""

    WRONG_CODE = "wrong-code"  # the sender's proof of the code is wrong (before the key check)
    DAMAGED_PARTIAL = "damaged-partial"  # OUT.part no longer holds what its state recorded
    ANOTHER_RECORDING = "another-recording"  # OUT.part holds another recording of the tape
    ANOTHER_TAPE = "another-tape"  # OUT.part holds part of another tape
    BUSY = "busy"  # this receiver is receiving another tape from another sender
    COMPLETED = "completed"  # OUT was just completed with another tape
    OTHER = "other"  # no reason given, or one this version does not know


@dataclasses.dataclass(frozen=True)
class PeerRefusal:
    """A refusal as it travels: its reason, one line of text, and where a partial is damaged."""

    reason: Refusal
    text: str
    offset: int | None = None


def encode_refusal(refusal: PeerRefusal) -> bytes:
    """The ``ERROR`` frame that says ``refusal`` (``code`` ``"refused"``, read by any version)."""
    fields: dict[str, Any] = {"code": "refused", "reason": refusal.reason.value}
    fields["message"] = " ".join(refusal.text.split())  # one line, whatever it was given
    if refusal.offset is not None:
        fields["offset"] = refusal.offset
    return encode_message(Kind.ERROR, **fields)


def decode_refusal(message: dict[str, Any]) -> PeerRefusal | None:
    """The refusal an ``ERROR`` message says, or ``None`` if it is not a refusal.

    Lenient on purpose (the session stops either way): a missing or unknown reason reads as
    :attr:`Refusal.OTHER`, a text that is not one line is made one, an offset that is not a
    non-negative integer is dropped.
    """
    if message.get("code") != "refused":
        return None
    try:
        reason = Refusal(message.get("reason"))
    except ValueError:
        reason = Refusal.OTHER
    text = message.get("message")
    text = " ".join(text.split())[:1000] if isinstance(text, str) else ""
    offset = message.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        offset = None
    return PeerRefusal(reason, text or "no reason given", offset)


# The preamble ---------------------------------------------------------------------------------

PREAMBLE_MAGIC = b"ATARTAPE-TRANSFER/"
PREAMBLE_MAX = 64
MODES = ("tls", "plain")


def preamble(mode: str) -> bytes:
    """The line a side opens a connection with: ``ATARTAPE-TRANSFER/2 <mode>`` and CRLF."""
    if mode not in MODES:
        raise InvalidArgumentError(f"unknown mode {mode!r}")
    return PREAMBLE_MAGIC + PROTOCOL.rpartition("/")[2].encode() + b" " + mode.encode() + b"\r\n"


def preamble_prefix_ok(data: bytes) -> bool:
    """Whether ``data`` (the first bytes a peer sent, maybe not all yet) can begin a preamble."""
    size = min(len(data), len(PREAMBLE_MAGIC))
    return data[:size] == PREAMBLE_MAGIC[:size]


def parse_preamble(line: bytes) -> str:
    """The mode of a peer's preamble line (with its line end).

    Raises :class:`TransferProtocolError` if the line is not a preamble of this protocol
    version; the message shows what the peer sent.
    """
    shown = line[:PREAMBLE_MAX].decode("ascii", "replace").strip() or repr(line)
    if not line.startswith(PREAMBLE_MAGIC) or not line.endswith(b"\r\n"):
        raise TransferProtocolError(f"it does not speak {PROTOCOL} (it sent {shown!r})")
    version, _, mode = line[len(PREAMBLE_MAGIC) : -2].decode("ascii", "replace").partition(" ")
    if "atartape-transfer/" + version != PROTOCOL:
        raise TransferProtocolError(f"it speaks atartape-transfer/{version}, not {PROTOCOL}")
    if mode not in MODES:
        raise TransferProtocolError(f"it asks for an unknown mode {mode!r}")
    return mode


# Frames ---------------------------------------------------------------------------------------


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
        raise TransferProtocolError(f"unknown frame kind {raw_kind}") from None
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


def get_hex(message: dict[str, Any], key: str, size: int) -> bytes:
    """``message[key]``, hex of exactly ``size`` bytes; else :class:`TransferProtocolError`."""
    text = get_str(message, key)
    try:
        value = bytes.fromhex(text or "")
    except ValueError:
        value = b""
    if len(value) != size:
        raise TransferProtocolError(f"field {key!r} must be {size} bytes in hex")
    return value


# The code -------------------------------------------------------------------------------------

CODE_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32: no i, l, o, u
CODE_LENGTH = 16  # symbols: 80 bits
CODE_BYTES = CODE_LENGTH * 5 // 8
NONCE_SIZE = 32
PROOF_SIZE = 32
_CODE_SALT = PROTOCOL.encode() + b" code"
_LOOKALIKES = str.maketrans({"i": "1", "l": "1", "o": "0"})


def format_code(secret: bytes) -> str:
    """The code for ``secret`` (:data:`CODE_BYTES` random bytes), as four groups of four."""
    if len(secret) != CODE_BYTES:
        raise InvalidArgumentError(f"a code is made of {CODE_BYTES} bytes")
    number = int.from_bytes(secret, "big")
    symbols = [CODE_ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(CODE_LENGTH))]
    return "-".join("".join(symbols[i : i + 4]) for i in range(0, CODE_LENGTH, 4))


def normalize_code(text: str) -> str:
    """The code as :func:`format_code` writes it, from what a person typed.

    Case, spaces and hyphens do not matter, and ``i``/``l`` read as ``1``, ``o`` as ``0``.
    Raises :class:`ValueError` if it is not 16 symbols of the code alphabet.
    """
    symbols = "".join(text.lower().split()).replace("-", "").translate(_LOOKALIKES)
    if len(symbols) != CODE_LENGTH or any(s not in CODE_ALPHABET for s in symbols):
        raise InvalidArgumentError(
            f"a transfer code is {CODE_LENGTH} letters and digits, such as "
            f"'{format_code(bytes(range(CODE_BYTES)))}' (as 'atartape receive' prints it)"
        )
    return "-".join(symbols[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def code_key(code: str) -> bytes:
    """The key both sides prove the code with: scrypt (N=2^14, r=8, p=1) of the normal code.

    The stretch costs 16 MiB and a fraction of a second (kept for the process's next use of
    the same code); it makes each offline guess of a code as expensive (see
    :mod:`atartape.transfer.security`). Raises :class:`ValueError` for a malformed code.
    """
    return _stretch(normalize_code(code))


@functools.lru_cache(maxsize=4)
def _stretch(normal: str) -> bytes:
    return hashlib.scrypt(normal.encode(), salt=_CODE_SALT, n=1 << 14, r=8, p=1, dklen=32)


def auth_proof(key: bytes, role: str, certificate: bytes, nonces: tuple[bytes, bytes]) -> bytes:
    """HMAC-SHA256 proof that ``role`` (``"sender"`` or ``"receiver"``) holds ``key``.

    It covers the role, the protocol, the SHA-256 of the receiver's certificate (DER) as this
    side saw it and both nonces (receiver's, sender's): a proof made for one TLS session, one
    certificate or one direction is worthless for any other.
    """
    if role not in ("sender", "receiver"):
        raise InvalidArgumentError(f"unknown role {role!r}")
    message = b"\0".join(
        [PROTOCOL.encode(), role.encode(), hashlib.sha256(certificate).digest(), *nonces]
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def proof_matches(expected: bytes, given: bytes) -> bool:
    """Compare two proofs in constant time."""
    return hmac.compare_digest(expected, given)


# Segments and the digest chain ----------------------------------------------------------------


def segment_count(total_size: int, segment_size: int) -> int:
    """How many segments of ``segment_size`` cover a stream of ``total_size`` bytes."""
    return -(-total_size // segment_size)


def segment_end(index: int, total_size: int, segment_size: int) -> int:
    """Offset just past segment ``index``."""
    return min((index + 1) * segment_size, total_size)


class SegmentHasher:
    """Cuts a stream into segments and hashes each with SHA-256, from segment ``first`` on.

    The one place a transfer hashes segments: the sender as it streams and as it re-reads a
    prefix, the receiver as it appends and as it re-reads the file it holds.
    """

    def __init__(self, total_size: int, segment_size: int, first: int = 0) -> None:
        if segment_size < 1:
            raise InvalidArgumentError("segment_size must be positive")
        self.total_size = total_size
        self.segment_size = segment_size
        self.index = first  # the segment being hashed
        self.position = min(first * segment_size, total_size)
        self._hasher = hashlib.sha256()

    @property
    def bound(self) -> int:
        """End of the segment being hashed."""
        return segment_end(self.index, self.total_size, self.segment_size)

    @property
    def room(self) -> int:
        """Bytes still missing from the segment being hashed."""
        return self.bound - self.position

    def reset(self) -> None:
        """Forget the bytes hashed since the start of the current segment."""
        self.position = min(self.index * self.segment_size, self.total_size)
        self._hasher = hashlib.sha256()

    def feed(self, data: bytes | memoryview) -> list[tuple[int, bytes]]:
        """Hash ``data`` (the next bytes of the stream, across segments if need be).

        Returns ``(index, sha256)`` of each segment it completed. Raises :class:`ValueError`
        for bytes past the end of the stream.
        """
        view = memoryview(data)
        if self.position + len(view) > self.total_size:
            raise InvalidArgumentError(
                f"{len(view)} bytes at {self.position} go past {self.total_size}"
            )
        done: list[tuple[int, bytes]] = []
        while view:
            take = min(len(view), self.room)
            self._hasher.update(view[:take])
            self.position += take
            view = view[take:]
            if self.position == self.bound:
                done.append((self.index, self._hasher.digest()))
                self.index += 1
                self._hasher = hashlib.sha256()
        return done


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
