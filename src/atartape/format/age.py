"""age v1 (age-encryption.org/v1, c2sp.org/age) for the sealed view of a tape: pure, resumable.

An age file is a textual header that wraps a 16-byte *file key* for one or more recipients,
ended by a MAC line, then a 16-byte *payload nonce*, then the payload: the plaintext cut into
chunks of ``CHUNK_SIZE`` (64 KiB) bytes, each sealed with ChaCha20-Poly1305 under the payload key
and a nonce made of the chunk index and a last-chunk flag (the STREAM construction). Every sealed
byte therefore depends only on the file key, the payload nonce, the chunk index and that chunk's
plaintext: chunk ``i`` can be sealed again, alone, at any time, and gives the same bytes. That is
what lets a sealed tape resume at any byte, be cut into volumes, and be read by range.

Vocabulary used throughout:

- the *prefix* is what :func:`make_header` returns: the header text **and** the 16-byte payload
  nonce after it. ``H = len(prefix)`` is the ``header_size`` of every function here; the sealed
  chunk ``i`` starts at ``H + i * SEALED_CHUNK_SIZE``.
- ``N`` is the plaintext size (the plain tape's size). An empty plaintext is one empty final chunk.

Arithmetic (``C = CHUNK_SIZE = 65536``, ``T = TAG_SIZE = 16``)::

    chunks(N)          = max(1, ceil(N / C))
    sealed_size(H, N)  = H + N + chunks(N) * T
    chunk of offset q  = (q - H) // (C + T)          for H <= q < sealed_size
    plain range of i   = [i * C, min((i + 1) * C, N))

Nothing here does I/O. The cryptography primitives come from the ``cryptography`` package, imported
when first needed, so the arithmetic works without it.

Errors: every error raised on purpose is a :class:`SealError` (a ``ValueError``);
:class:`HeaderError` for a header that is malformed, fails its MAC or that no given identity opens;
:class:`ChunkError` for a sealed chunk that does not authenticate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._extras import require
from ..errors import ViewError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "DEFAULT_MAX_WORK_FACTOR",
    "DEFAULT_WORK_FACTOR",
    "FILE_KEY_SIZE",
    "NONCE_SIZE",
    "SEALED_CHUNK_SIZE",
    "TAG_SIZE",
    "ChunkError",
    "HeaderError",
    "Identity",
    "OpenedHeader",
    "PayloadKey",
    "Recipient",
    "Rng",
    "ScryptIdentity",
    "ScryptRecipient",
    "SealError",
    "SealedLayout",
    "X25519Identity",
    "X25519Recipient",
    "bech32_decode",
    "bech32_encode",
    "block_digest_key",
    "check_file_key",
    "chunk_count",
    "generate_file_key",
    "header_length",
    "make_header",
    "open_bytes",
    "open_chunk",
    "open_header",
    "open_window",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "payload_key",
    "plain_size_of",
    "seal_block",
    "seal_bytes",
    "seal_chunk",
    "seal_window",
    "sealed_size",
]

CHUNK_SIZE = 64 * 1024
"""Plaintext bytes per payload chunk (C)."""
TAG_SIZE = 16
"""Poly1305 tag bytes added to every chunk (T)."""
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
"""Bytes of a full sealed chunk (C + T = 65552)."""
FILE_KEY_SIZE = 16
"""Bytes of the file key."""
NONCE_SIZE = 16
"""Bytes of the payload nonce that follows the header text."""
DEFAULT_WORK_FACTOR = 18
"""age's default scrypt work factor, as log2 N (N = 262144: about 256 MiB and 1 s)."""
DEFAULT_MAX_WORK_FACTOR = 22
"""The highest scrypt work factor :func:`open_header` accepts unless told otherwise (age's own)."""
BLOCK_SIZE = 1 << 20
"""Plain bytes per digest block (16 chunks) for the nonce-reuse guard, see :func:`seal_block`."""

_VERSION_LINE = b"age-encryption.org/v1"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_SCRYPT_SALT_LABEL = b"age-encryption.org/v1/scrypt"
_BLOCK_DIGEST_INFO = b"atartape/v1 sealed block digest"
_MAX_CHUNK_INDEX = 1 << 88  # the counter is 11 bytes
_ZERO_NONCE = bytes(12)
_COLUMNS = 64
_MIN_WORK_FACTOR = 1
_MAX_WORK_FACTOR = 30  # what age itself allows when encrypting

Rng = Callable[[int], bytes]
"""A source of random bytes: called with a length, returns that many bytes (``os.urandom``)."""


class SealError(ViewError, ValueError):
    """Bad input to a sealing function: a malformed key, size, offset or chunk, or bad arguments."""


class HeaderError(SealError):
    """An age header is malformed or truncated, fails its MAC, or no given identity opens it."""


class ChunkError(SealError):
    """A sealed payload chunk does not authenticate (wrong key, index, position or bytes)."""


# --------------------------------------------------------------------------- Bech32 (BIP 173)

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_VALUES = {c: i for i, c in enumerate(_BECH32_CHARSET)}
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _bech32_polymod(values: Iterable[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = ((check & 0x1FFFFFF) << 5) ^ value
        for i, generator in enumerate(_BECH32_GENERATOR):
            if (top >> i) & 1:
                check ^= generator
    return check


def _bech32_hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & mask)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & mask)
    elif bits >= from_bits or (acc << (to_bits - bits)) & mask:
        raise SealError("bech32: invalid padding in the data part")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` as Bech32 (BIP 173, without its 90-character limit) with the given HRP.

    The result is lowercase; age writes secret keys uppercase (``.upper()`` keeps the checksum).
    Raises :class:`SealError` when the HRP is empty or holds characters outside 33..126.
    """
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise SealError(f"bech32: invalid human-readable part {hrp!r}")
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _bech32_polymod([*_bech32_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[v] for v in values + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Decode a Bech32 string into its lowercase HRP and its data bytes.

    Raises :class:`SealError` on mixed case, a missing separator, a character outside the
    alphabet, a wrong checksum or non-zero padding bits.
    """
    if text.lower() != text and text.upper() != text:
        raise SealError("bech32: mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise SealError("bech32: missing separator or checksum")
    hrp, rest = text[:pos], text[pos + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise SealError("bech32: invalid character in the human-readable part")
    try:
        values = [_BECH32_VALUES[c] for c in rest]
    except KeyError:
        raise SealError("bech32: invalid character in the data part") from None
    if _bech32_polymod([*_bech32_hrp_expand(hrp), *values]) != 1:
        raise SealError("bech32: wrong checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))


# --------------------------------------------------------------------------- primitives


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    """Strict unpadded standard base64: rejects padding, other alphabets and non-canonical tails."""
    if b"=" in text or len(text) % 4 == 1:
        raise HeaderError(f"{what}: not canonical unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise HeaderError(f"{what}: not canonical unpadded base64") from None
    if _b64(data) != text:
        raise HeaderError(f"{what}: not canonical unpadded base64")
    return data


def _need_cryptography() -> None:
    require("cryptography", "age", "an age-sealed view")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    _need_cryptography()
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _chacha(key: bytes) -> ChaCha20Poly1305:
    _need_cryptography()
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return ChaCha20Poly1305(key)


def _aead_open(key: bytes, body: bytes) -> bytes | None:
    """Open a stanza body with the zero nonce; ``None`` when it does not authenticate."""
    from cryptography.exceptions import InvalidTag

    try:
        return _chacha(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


def _x25519_public(secret: bytes) -> bytes:
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def _x25519(secret: bytes, public: bytes, error: type[SealError]) -> bytes:
    """X25519(secret, public); raises ``error`` for an all-zero shared secret."""
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    try:
        shared = X25519PrivateKey.from_private_bytes(secret).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:  # cryptography refuses low-order points (all-zero shared secret)
        raise error("X25519: the shared secret is all zeros (a low-order point)") from None
    if not any(shared):
        raise error("X25519: the shared secret is all zeros (a low-order point)")
    return shared


def _scrypt_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    _need_cryptography()
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=_SCRYPT_SALT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1).derive(
        passphrase
    )


def _draw(rng: Rng, size: int) -> bytes:
    data = rng(size)
    if not isinstance(data, bytes) or len(data) != size:
        raise SealError(f"rng returned {len(data)} bytes where {size} were asked for")
    return data


def generate_file_key(rng: Rng = os.urandom) -> bytes:
    """Draw a fresh 16-byte file key from ``rng``. Never use one file key for two headers.

    Raises :class:`SealError` when ``rng`` returns the wrong number of bytes.
    """
    return _draw(rng, FILE_KEY_SIZE)


# --------------------------------------------------------------------------- recipients, identities


@dataclass(frozen=True)
class X25519Recipient:
    """An age X25519 recipient (public key), written ``age1...``."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise SealError(f"an X25519 public key has 32 bytes, not {len(self.public_key)}")

    def __str__(self) -> str:
        return bech32_encode("age", self.public_key)


@dataclass(frozen=True)
class ScryptRecipient:
    """A passphrase recipient; ``work_factor`` is log2 of scrypt's N (1..30, age's default 18).

    A header with an scrypt recipient has no other recipient.
    """

    passphrase: bytes = field(repr=False)
    work_factor: int = DEFAULT_WORK_FACTOR

    def __post_init__(self) -> None:
        if not self.passphrase:
            raise SealError("the passphrase is empty")
        if not _MIN_WORK_FACTOR <= self.work_factor <= _MAX_WORK_FACTOR:
            raise SealError(
                "the scrypt work factor (log2 N) must be in"
                f" {_MIN_WORK_FACTOR}..{_MAX_WORK_FACTOR}, not {self.work_factor}"
            )


@dataclass(frozen=True)
class X25519Identity:
    """An age X25519 identity (secret key), written ``AGE-SECRET-KEY-1...``."""

    secret_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret_key) != 32:
            raise SealError(f"an X25519 secret key has 32 bytes, not {len(self.secret_key)}")

    @classmethod
    def generate(cls, rng: Rng = os.urandom) -> X25519Identity:
        """A new identity from 32 bytes of ``rng``."""
        return cls(_draw(rng, 32))

    @property
    def recipient(self) -> X25519Recipient:
        """The matching recipient: X25519(secret, basepoint)."""
        return X25519Recipient(_x25519_public(self.secret_key))

    def __str__(self) -> str:
        return bech32_encode("age-secret-key-", self.secret_key).upper()


@dataclass(frozen=True)
class ScryptIdentity:
    """A passphrase that opens a header with an scrypt stanza."""

    passphrase: bytes = field(repr=False)


Recipient = X25519Recipient | ScryptRecipient
Identity = X25519Identity | ScryptIdentity


def parse_recipient(text: str) -> X25519Recipient:
    """Parse an ``age1...`` X25519 recipient.

    Raises :class:`SealError` when it is not Bech32 with HRP ``age`` holding 32 bytes (plugin and
    post-quantum recipients, ``age1<name>1...``, are not supported).
    """
    hrp, data = bech32_decode(text.strip())
    if hrp != "age":
        raise SealError(f"not an age X25519 recipient (prefix {hrp!r}1): {text!r}")
    return X25519Recipient(data)


def parse_identity(text: str) -> X25519Identity:
    """Parse an ``AGE-SECRET-KEY-1...`` X25519 identity.

    Raises :class:`SealError` when it is not Bech32 with HRP ``AGE-SECRET-KEY-`` holding 32 bytes.
    The message never repeats the key.
    """
    try:
        hrp, data = bech32_decode(text.strip())
    except SealError as exc:
        raise SealError(f"not an age secret key: {exc}") from None
    if hrp != "age-secret-key-":
        raise SealError("not an age X25519 secret key (expected AGE-SECRET-KEY-1...)")
    return X25519Identity(data)


def parse_identities(text: str) -> tuple[X25519Identity, ...]:
    """Parse an age identity file: one ``AGE-SECRET-KEY-1...`` a line, ``#`` comments, blanks.

    Raises :class:`SealError` for any other line (naming its line number) or when there is none.
    """
    found: list[X25519Identity] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(parse_identity(line))
        except SealError as exc:
            raise SealError(f"identity file, line {number}: {exc}") from None
    if not found:
        raise SealError("the identity file holds no identity")
    return tuple(found)


# --------------------------------------------------------------------------- header writing


def _stanza(args: Sequence[bytes], body: bytes) -> bytes:
    encoded = _b64(body)
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    if not lines or len(lines[-1]) == _COLUMNS:
        lines.append(b"")  # the body ends with a line shorter than 64 columns
    return b"-> " + b" ".join(args) + b"\n" + b"".join(line + b"\n" for line in lines)


def _header_mac(file_key: bytes, covered: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest()


def make_header(
    file_key: bytes, recipients: Sequence[Recipient], *, rng: Rng = os.urandom
) -> bytes:
    """Make the prefix of a sealed tape: the age v1 header text, then the 16-byte payload nonce.

    One stanza per recipient, in order: ``-> X25519 <ephemeral share>`` with the wrapped file key,
    or ``-> scrypt <salt> <work factor>`` (then it must be the only recipient); then the
    ``--- <MAC>`` line (HMAC-SHA-256 under HKDF(file_key, salt="", info="header")); then the nonce.
    ``rng`` is called, in order, for 32 bytes per X25519 stanza (the ephemeral secret), 16 bytes
    per scrypt stanza (the salt), and 16 bytes for the payload nonce: the result is a function of
    ``file_key``, ``recipients`` and what ``rng`` returns. Make it once per tape and store it.

    Raises :class:`SealError` when the file key is not 16 bytes, there is no recipient, an scrypt
    recipient is not alone, an X25519 recipient is a low-order point, or ``rng`` returns the wrong
    number of bytes.
    """
    if len(file_key) != FILE_KEY_SIZE:
        raise SealError(f"the file key has {FILE_KEY_SIZE} bytes, not {len(file_key)}")
    if not recipients:
        raise SealError("a header needs at least one recipient")
    if len(recipients) > 1 and any(isinstance(r, ScryptRecipient) for r in recipients):
        raise SealError("an scrypt (passphrase) recipient must be the only recipient")
    parts = [_VERSION_LINE + b"\n"]
    for recipient in recipients:
        if isinstance(recipient, X25519Recipient):
            secret = _draw(rng, 32)
            share = _x25519_public(secret)
            shared = _x25519(secret, recipient.public_key, SealError)
            wrap_key = _hkdf(shared, share + recipient.public_key, _X25519_INFO)
            body = _chacha(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
            parts.append(_stanza([b"X25519", _b64(share)], body))
        elif isinstance(recipient, ScryptRecipient):
            salt = _draw(rng, 16)
            wrap_key = _scrypt_key(recipient.passphrase, salt, recipient.work_factor)
            body = _chacha(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
            parts.append(_stanza([b"scrypt", _b64(salt), b"%d" % recipient.work_factor], body))
        else:
            raise SealError(f"not an age recipient: {type(recipient).__name__}")
    covered = b"".join(parts) + b"---"
    mac = _header_mac(file_key, covered)
    return covered + b" " + _b64(mac) + b"\n" + _draw(rng, NONCE_SIZE)


# --------------------------------------------------------------------------- header reading


@dataclass(frozen=True)
class _Stanza:
    args: tuple[bytes, ...]
    body: bytes


@dataclass(frozen=True)
class _ParsedHeader:
    stanzas: tuple[_Stanza, ...]
    covered: bytes  # up to and including "---"
    mac: bytes
    size: int  # header text + payload nonce
    nonce: bytes


_WORK_FACTOR_RE = re.compile(rb"[1-9][0-9]*")
_B64_LINE_RE = re.compile(rb"[A-Za-z0-9+/]*")


def _parse_header(data: bytes) -> _ParsedHeader | None:
    """Split a header; ``None`` when ``data`` stops before the end of the payload nonce."""
    pos = 0

    def next_line() -> bytes | None:
        nonlocal pos
        end = data.find(b"\n", pos)
        if end < 0:
            return None
        line = data[pos:end]
        pos = end + 1
        return line

    first = next_line()
    if first is None:
        if len(data) > len(_VERSION_LINE) or not _VERSION_LINE.startswith(data):
            raise HeaderError("not an age v1 file (no age-encryption.org/v1 line)")
        return None
    if first != _VERSION_LINE:
        raise HeaderError("not an age v1 file (no age-encryption.org/v1 line)")
    stanzas: list[_Stanza] = []
    while True:
        start = pos
        line = next_line()
        if line is None:
            return None
        if line.startswith(b"---"):
            if not line.startswith(b"--- ") or len(line) != 4 + 43:
                raise HeaderError("malformed MAC line")
            mac = _unb64(line[4:], "header MAC")
            if not stanzas:
                raise HeaderError("the header has no recipient stanza")
            size = pos + NONCE_SIZE
            if len(data) < size:
                return None
            return _ParsedHeader(tuple(stanzas), data[: start + 3], mac, size, data[pos:size])
        if not line.startswith(b"-> "):
            raise HeaderError(f"malformed header line at byte {start}")
        args = tuple(line[3:].split(b" "))
        if any(not arg or any(not 0x21 <= c <= 0x7E for c in arg) for arg in args):
            raise HeaderError(f"malformed stanza arguments at byte {start}")
        body_lines: list[bytes] = []
        while True:
            body_line = next_line()
            if body_line is None:
                return None
            if len(body_line) > _COLUMNS or not _B64_LINE_RE.fullmatch(body_line):
                raise HeaderError(f"malformed stanza body at byte {start}")
            body_lines.append(body_line)
            if len(body_line) < _COLUMNS:
                break
        stanzas.append(_Stanza(args, _unb64(b"".join(body_lines), "stanza body")))


def header_length(data: bytes) -> int | None:
    """The length of the prefix (header text and payload nonce) at the start of ``data``.

    Returns ``None`` when ``data`` ends before the prefix does (read more and ask again).
    Raises :class:`HeaderError` when what is there is not an age v1 header.
    """
    parsed = _parse_header(data)
    return None if parsed is None else parsed.size


@dataclass(frozen=True)
class OpenedHeader:
    """What opening a header gives: the file key, the prefix size ``H`` and the payload nonce."""

    file_key: bytes = field(repr=False)
    header_size: int
    payload_nonce: bytes

    def payload_key(self) -> PayloadKey:
        """The payload key of this file, see :func:`payload_key`."""
        return payload_key(self.file_key, self.payload_nonce)


def _unwrap_x25519(identity: X25519Identity, stanza: _Stanza) -> bytes | None:
    if len(stanza.args) != 2:
        raise HeaderError("an X25519 stanza has exactly two arguments")
    share = _unb64(stanza.args[1], "X25519 share")
    if len(share) != 32:
        raise HeaderError("an X25519 share has 32 bytes")
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise HeaderError("an X25519 stanza body has 32 bytes")
    public = identity.recipient.public_key
    wrap_key = _hkdf(_x25519(identity.secret_key, share, HeaderError), share + public, _X25519_INFO)
    return _aead_open(wrap_key, stanza.body)


def _unwrap_scrypt(identity: ScryptIdentity, stanza: _Stanza, max_work_factor: int) -> bytes | None:
    if len(stanza.args) != 3:
        raise HeaderError("an scrypt stanza has exactly three arguments")
    salt = _unb64(stanza.args[1], "scrypt salt")
    if len(salt) != 16:
        raise HeaderError("an scrypt salt has 16 bytes")
    if not _WORK_FACTOR_RE.fullmatch(stanza.args[2]):
        raise HeaderError("malformed scrypt work factor")
    work_factor = int(stanza.args[2])
    if work_factor > max_work_factor:
        raise HeaderError(
            f"the scrypt work factor {work_factor} is above the limit {max_work_factor}"
        )
    if work_factor > _MAX_WORK_FACTOR:
        raise HeaderError(f"the scrypt work factor {work_factor} is out of range")
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise HeaderError("an scrypt stanza body has 32 bytes")
    return _aead_open(_scrypt_key(identity.passphrase, salt, work_factor), stanza.body)


def open_header(
    data: bytes,
    identities: Sequence[Identity],
    *,
    max_work_factor: int = DEFAULT_MAX_WORK_FACTOR,
) -> OpenedHeader:
    """Open the header at the start of ``data`` (which may go on into the payload).

    Tries each identity on each stanza addressed to its kind (unknown stanza kinds are skipped,
    as age requires), checks the header MAC with the file key found, and returns it with the
    prefix size ``H`` and the payload nonce. ``max_work_factor`` bounds the scrypt work factor
    (log2 N) this call is willing to compute.

    Raises :class:`HeaderError` when ``data`` is truncated or malformed, a known stanza is
    malformed, an scrypt stanza is not alone, the scrypt work factor is above the limit, no
    identity opens a stanza (for a passphrase: it is wrong), or the MAC does not match.
    """
    parsed = _parse_header(data)
    if parsed is None:
        raise HeaderError(f"the age header is truncated ({len(data)} bytes)")
    kinds = [stanza.args[0] for stanza in parsed.stanzas]
    if b"scrypt" in kinds and len(kinds) > 1:
        raise HeaderError("an scrypt stanza must be the only stanza of a header")
    file_key: bytes | None = None
    for identity in identities:
        for stanza in parsed.stanzas:
            if isinstance(identity, X25519Identity) and stanza.args[0] == b"X25519":
                file_key = _unwrap_x25519(identity, stanza)
            elif isinstance(identity, ScryptIdentity) and stanza.args[0] == b"scrypt":
                file_key = _unwrap_scrypt(identity, stanza, max_work_factor)
            if file_key is not None:
                break
        if file_key is not None:
            break
    if file_key is None:
        raise HeaderError(
            "no identity opens this header (wrong key or passphrase, or another recipient kind)"
        )
    if len(file_key) != FILE_KEY_SIZE:
        raise HeaderError("the wrapped file key is not 16 bytes")
    if not hmac.compare_digest(_header_mac(file_key, parsed.covered), parsed.mac):
        raise HeaderError("the header MAC does not match (the header was altered)")
    return OpenedHeader(file_key, parsed.size, parsed.nonce)


def check_file_key(prefix: bytes, file_key: bytes) -> OpenedHeader:
    """Check that ``file_key`` is the key of the stored ``prefix`` (its header MAC proves it).

    This is how a player checks, before it seals a byte, that the key it was given belongs to
    the header stored for the tape. Returns the opened header.
    Raises :class:`HeaderError` when the prefix is malformed or truncated, or the MAC differs.
    """
    parsed = _parse_header(prefix)
    if parsed is None:
        raise HeaderError(f"the age header is truncated ({len(prefix)} bytes)")
    if len(file_key) != FILE_KEY_SIZE or not hmac.compare_digest(
        _header_mac(file_key, parsed.covered), parsed.mac
    ):
        raise HeaderError("this file key does not belong to this header")
    return OpenedHeader(file_key, parsed.size, parsed.nonce)


# --------------------------------------------------------------------------- payload chunks


@dataclass(frozen=True)
class PayloadKey:
    """The 32-byte payload key, holding its ChaCha20-Poly1305 instance for repeated use."""

    key: bytes = field(repr=False)
    _aead: ChaCha20Poly1305 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise SealError(f"a payload key has 32 bytes, not {len(self.key)}")
        object.__setattr__(self, "_aead", _chacha(self.key))


def payload_key(file_key: bytes, payload_nonce: bytes) -> PayloadKey:
    """HKDF-SHA-256(ikm=file_key, salt=payload_nonce, info="payload").

    Raises :class:`SealError` when the file key is not 16 bytes or the nonce not 16 bytes.
    """
    if len(file_key) != FILE_KEY_SIZE:
        raise SealError(f"the file key has {FILE_KEY_SIZE} bytes, not {len(file_key)}")
    if len(payload_nonce) != NONCE_SIZE:
        raise SealError(f"the payload nonce has {NONCE_SIZE} bytes, not {len(payload_nonce)}")
    return PayloadKey(_hkdf(file_key, payload_nonce, b"payload"))


def _chunk_nonce(index: int, last: bool) -> bytes:
    if not 0 <= index < _MAX_CHUNK_INDEX:
        raise SealError(f"chunk index {index} is out of range")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def seal_chunk(key: PayloadKey, index: int, plaintext: bytes, last: bool) -> bytes:
    """Seal payload chunk ``index``: ChaCha20-Poly1305 with nonce ``index (11 bytes BE) || last``.

    A chunk that is not last holds exactly ``CHUNK_SIZE`` bytes; the last one 1..``CHUNK_SIZE``,
    or 0 only when it is chunk 0 (the whole payload is empty). Returns ``len(plaintext) + 16``
    bytes. Raises :class:`SealError` when the length breaks that rule or the index is out of range.
    """
    size = len(plaintext)
    if size > CHUNK_SIZE or (not last and size != CHUNK_SIZE):
        raise SealError(f"chunk {index}: {size} bytes (last={last}) breaks the chunk size rule")
    if last and size == 0 and index != 0:
        raise SealError(f"chunk {index}: only an empty payload has an empty final chunk")
    return key._aead.encrypt(_chunk_nonce(index, last), plaintext, None)


def open_chunk(key: PayloadKey, index: int, sealed: bytes, last: bool) -> bytes:
    """Open a sealed chunk ``index``, the reverse of :func:`seal_chunk`; returns its plaintext.

    Raises :class:`ChunkError` when the length breaks the chunk size rule or the chunk does not
    authenticate under this key, index and last flag (a wrong key, a truncated, reordered or
    altered payload); :class:`SealError` when the index is out of range.
    """
    from cryptography.exceptions import InvalidTag

    size = len(sealed) - TAG_SIZE
    if size < 0 or size > CHUNK_SIZE or (not last and size != CHUNK_SIZE):
        raise ChunkError(f"chunk {index}: {len(sealed)} sealed bytes (last={last}) is no chunk")
    if last and size == 0 and index != 0:
        raise ChunkError(f"chunk {index}: an empty final chunk after other chunks")
    try:
        return key._aead.decrypt(_chunk_nonce(index, last), sealed, None)
    except InvalidTag:
        raise ChunkError(f"chunk {index} (last={last}) does not authenticate") from None


# --------------------------------------------------------------------------- layout arithmetic


def chunk_count(plain_size: int) -> int:
    """Number of payload chunks for ``plain_size`` bytes: ``max(1, ceil(N / CHUNK_SIZE))``.

    Raises :class:`SealError` for a negative size.
    """
    if plain_size < 0:
        raise SealError(f"negative plain size {plain_size}")
    return max(1, -(-plain_size // CHUNK_SIZE))


def sealed_size(header_size: int, plain_size: int) -> int:
    """``H + N + chunk_count(N) * TAG_SIZE``. Raises :class:`SealError` for negative sizes."""
    if header_size < 0:
        raise SealError(f"negative header size {header_size}")
    return header_size + plain_size + chunk_count(plain_size) * TAG_SIZE


def plain_size_of(header_size: int, total_size: int) -> int:
    """The plaintext size of a sealed file of ``total_size`` bytes with an ``H``-byte prefix.

    The inverse of :func:`sealed_size`. Raises :class:`SealError` when no plaintext size gives
    ``total_size`` (the file is truncated, or ends with an empty chunk after other chunks).
    """
    payload = total_size - header_size
    if header_size < 0 or payload < TAG_SIZE:
        raise SealError(
            f"{total_size} bytes cannot be a sealed file with a {header_size}-byte header"
        )
    chunks = -(-payload // SEALED_CHUNK_SIZE)
    plain = payload - chunks * TAG_SIZE
    if chunk_count(plain) != chunks:
        raise SealError(
            f"{total_size} bytes cannot be a sealed file with a {header_size}-byte header"
        )
    return plain


@dataclass(frozen=True)
class SealedLayout:
    """Where every byte of a sealed tape lies: an ``H``-byte prefix, then the sealed chunks.

    Ranges are half-open ``(start, end)`` pairs of offsets. Construction raises
    :class:`SealError` for negative sizes; the methods raise :class:`SealError` for offsets or
    indexes outside the tape.
    """

    header_size: int
    plain_size: int

    def __post_init__(self) -> None:
        if self.header_size < 0 or self.plain_size < 0:
            raise SealError(f"negative sizes in {self!r}")

    @property
    def chunk_count(self) -> int:
        """``max(1, ceil(N / CHUNK_SIZE))``."""
        return chunk_count(self.plain_size)

    @property
    def size(self) -> int:
        """The sealed size, ``H + N + chunk_count * TAG_SIZE``."""
        return sealed_size(self.header_size, self.plain_size)

    def _check_chunk(self, index: int) -> None:
        if not 0 <= index < self.chunk_count:
            raise SealError(f"chunk {index} is outside 0..{self.chunk_count - 1}")

    def chunk_of(self, offset: int) -> int | None:
        """The chunk holding sealed byte ``offset``, or ``None`` when it lies in the prefix."""
        if not 0 <= offset < self.size:
            raise SealError(f"sealed offset {offset} is outside [0, {self.size})")
        if offset < self.header_size:
            return None
        return (offset - self.header_size) // SEALED_CHUNK_SIZE

    def is_last(self, index: int) -> bool:
        """Whether chunk ``index`` is the final chunk (sealed with the last flag)."""
        self._check_chunk(index)
        return index == self.chunk_count - 1

    def chunk_plain_range(self, index: int) -> tuple[int, int]:
        """Plain bytes of chunk ``index``: ``[i*C, min((i+1)*C, N))``."""
        self._check_chunk(index)
        start = index * CHUNK_SIZE
        return start, min(start + CHUNK_SIZE, self.plain_size)

    def chunk_sealed_range(self, index: int) -> tuple[int, int]:
        """Sealed bytes of chunk ``index``: from ``H + i*(C+T)``, its plain length plus ``T``."""
        start, end = self.chunk_plain_range(index)
        sealed_start = self.header_size + index * SEALED_CHUNK_SIZE
        return sealed_start, sealed_start + (end - start) + TAG_SIZE

    def _check_range(self, start: int, end: int, size: int, what: str) -> None:
        if not 0 <= start <= end <= size:
            raise SealError(f"{what} range [{start}, {end}) is outside [0, {size}]")

    def chunks_for_sealed_range(self, start: int, end: int) -> range:
        """The chunks that hold any of the sealed bytes ``[start, end)`` (empty in the prefix)."""
        self._check_range(start, end, self.size, "sealed")
        first = max(start, self.header_size)
        if first >= end:
            return range(0)
        return range(
            (first - self.header_size) // SEALED_CHUNK_SIZE,
            (end - 1 - self.header_size) // SEALED_CHUNK_SIZE + 1,
        )

    def plain_range_for_sealed_range(self, start: int, end: int) -> tuple[int, int]:
        """The plain bytes needed to produce sealed ``[start, end)``: whole chunks' plaintext.

        ``(0, 0)`` when the range lies in the prefix, or only in the empty chunk of an empty tape.
        """
        chunks = self.chunks_for_sealed_range(start, end)
        if not chunks:
            return 0, 0
        return chunks[0] * CHUNK_SIZE, min(chunks[-1] * CHUNK_SIZE + CHUNK_SIZE, self.plain_size)

    def sealed_range_for_plain_range(self, start: int, end: int) -> tuple[int, int]:
        """The sealed bytes that hold plain ``[start, end)``: the whole chunks to fetch and open.

        An empty plain range gives an empty sealed range where its chunk starts (at the end of the
        tape when ``start == N``).
        """
        self._check_range(start, end, self.plain_size, "plain")
        if start == end:
            if start == self.plain_size:
                return self.size, self.size
            pos = self.header_size + (start // CHUNK_SIZE) * SEALED_CHUNK_SIZE
            return pos, pos
        return (
            self.chunk_sealed_range(start // CHUNK_SIZE)[0],
            self.chunk_sealed_range((end - 1) // CHUNK_SIZE)[1],
        )

    def blocks_for_chunks(self, chunks: range) -> range:
        """The digest blocks (``BLOCK_SIZE`` plain bytes each) that the given chunks lie in."""
        if not chunks:
            return range(0)
        per_block = BLOCK_SIZE // CHUNK_SIZE
        return range(chunks[0] // per_block, chunks[-1] // per_block + 1)

    @property
    def block_count(self) -> int:
        """Digest blocks: ``max(1, ceil(N / BLOCK_SIZE))``."""
        return max(1, -(-self.plain_size // BLOCK_SIZE))

    def block_plain_range(self, block: int) -> tuple[int, int]:
        """Plain bytes of digest block ``block``: ``[k*B, min((k+1)*B, N))``."""
        if not 0 <= block < self.block_count:
            raise SealError(f"block {block} is outside 0..{self.block_count - 1}")
        start = block * BLOCK_SIZE
        return start, min(start + BLOCK_SIZE, self.plain_size)

    def block_sealed_range(self, block: int) -> tuple[int, int]:
        """Sealed bytes of digest block ``block``: its chunks, from the first one's start to the
        last one's end."""
        lo, hi = self.block_plain_range(block)
        chunks = max(1, -(-(hi - lo) // CHUNK_SIZE))
        start = self.header_size + block * (BLOCK_SIZE // CHUNK_SIZE) * SEALED_CHUNK_SIZE
        return start, start + (hi - lo) + chunks * TAG_SIZE


def seal_window(
    key: PayloadKey, layout: SealedLayout, prefix: bytes, start: int, end: int, plain: bytes
) -> bytes:
    """Produce exactly the sealed bytes ``[start, end)``.

    ``plain`` holds the plain bytes ``layout.plain_range_for_sealed_range(start, end)``; the
    chunks they make are sealed whole and cut to the window, and prefix bytes come from
    ``prefix``. Raises :class:`SealError` when the window is outside the tape, the prefix is not
    ``H`` bytes, or ``plain`` has the wrong length.
    """
    if len(prefix) != layout.header_size:
        raise SealError(f"the prefix has {len(prefix)} bytes, the layout says {layout.header_size}")
    chunks = layout.chunks_for_sealed_range(start, end)
    plain_start, plain_end = layout.plain_range_for_sealed_range(start, end)
    if len(plain) != plain_end - plain_start:
        raise SealError(
            f"sealed [{start}, {end}) needs plain [{plain_start}, {plain_end}),"
            f" got {len(plain)} bytes"
        )
    out = [prefix[start:end]] if start < layout.header_size else []
    view = memoryview(plain)
    last = layout.chunk_count - 1
    for index in chunks:
        chunk_start, chunk_end = layout.chunk_plain_range(index)
        sealed = seal_chunk(
            key,
            index,
            bytes(view[chunk_start - plain_start : chunk_end - plain_start]),
            index == last,
        )
        sealed_start = layout.chunk_sealed_range(index)[0]
        out.append(sealed[max(start - sealed_start, 0) : end - sealed_start])
    return b"".join(out)


def open_window(
    key: PayloadKey, layout: SealedLayout, start: int, end: int, sealed: bytes
) -> bytes:
    """Recover exactly the plain bytes ``[start, end)`` from the sealed chunks that hold them.

    ``sealed`` holds the sealed bytes ``layout.sealed_range_for_plain_range(start, end)``.
    Raises :class:`SealError` when the range is outside the tape or ``sealed`` has the wrong
    length; :class:`ChunkError` when a chunk does not authenticate.
    """
    sealed_start, sealed_end = layout.sealed_range_for_plain_range(start, end)
    if len(sealed) != sealed_end - sealed_start:
        raise SealError(
            f"plain [{start}, {end}) needs sealed [{sealed_start}, {sealed_end}),"
            f" got {len(sealed)} bytes"
        )
    if start == end:
        return b""
    first, last = start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
    view = memoryview(sealed)
    out = []
    for index in range(first, last + 1):
        chunk_start, chunk_end = layout.chunk_sealed_range(index)
        out.append(
            open_chunk(
                key,
                index,
                bytes(view[chunk_start - sealed_start : chunk_end - sealed_start]),
                layout.is_last(index),
            )
        )
    plain = b"".join(out)
    skip = start - first * CHUNK_SIZE
    return plain[skip : skip + end - start]


# --------------------------------------------------------------------------- whole files


def seal_bytes(plain: bytes, recipients: Sequence[Recipient], *, rng: Rng = os.urandom) -> bytes:
    """Seal a whole plaintext as an age v1 file (file key, then :func:`make_header`, from ``rng``).

    Raises :class:`SealError` as :func:`make_header` does.
    """
    file_key = generate_file_key(rng)
    prefix = make_header(file_key, recipients, rng=rng)
    layout = SealedLayout(len(prefix), len(plain))
    key = payload_key(file_key, prefix[-NONCE_SIZE:])
    return seal_window(key, layout, prefix, 0, layout.size, plain)


def open_bytes(
    data: bytes,
    identities: Sequence[Identity],
    *,
    max_work_factor: int = DEFAULT_MAX_WORK_FACTOR,
) -> bytes:
    """Open a whole age v1 file (binary, not armored) and return its plaintext.

    Raises :class:`HeaderError` as :func:`open_header` does, :class:`SealError` when the payload
    length is impossible (truncated), :class:`ChunkError` when a chunk does not authenticate.
    """
    opened = open_header(data, identities, max_work_factor=max_work_factor)
    layout = SealedLayout(opened.header_size, plain_size_of(opened.header_size, len(data)))
    key = opened.payload_key()
    out = []
    for index in range(layout.chunk_count):  # every chunk, so an empty payload is checked too
        start, end = layout.chunk_sealed_range(index)
        out.append(open_chunk(key, index, data[start:end], layout.is_last(index)))
    return b"".join(out)


# --------------------------------------------------------------------------- nonce-reuse guard


def block_digest_key(file_key: bytes, payload_nonce: bytes) -> bytes:
    """The key of the block digests of one sealed tape (see :func:`seal_block`).

    HKDF-SHA-256(ikm=file_key, salt=payload_nonce, info="atartape/v1 sealed block digest"): the
    digests say nothing about the plaintext to whoever lacks the file key.
    Raises :class:`SealError` when the file key or nonce is not 16 bytes.
    """
    if len(file_key) != FILE_KEY_SIZE or len(payload_nonce) != NONCE_SIZE:
        raise SealError("the file key and the payload nonce have 16 bytes each")
    return _hkdf(file_key, payload_nonce, _BLOCK_DIGEST_INFO)


def seal_block(
    key: PayloadKey, digest_key: bytes, block: int, plain: bytes, final: bool
) -> tuple[list[bytes], bytes]:
    """Seal digest block ``block`` whole: its sealed chunks, and the block's digest, keyed
    BLAKE2b-128 of their tags.

    The digest is recorded when a tape is sealed; a block sealed again (a resume, a range) is
    sent only if its digest is the recorded one. Chunks sealed from other plaintext under the
    same nonces have other tags, so they are dropped unseen: a nonce is only ever used in the
    open with the plaintext it was recorded with. The tags are Poly1305 values under one-time
    keys and say nothing of the plaintext; checking them costs no pass of its own.

    ``plain`` holds ``BLOCK_SIZE`` bytes, fewer only when ``final`` (the block that ends the
    payload; empty only for an empty payload). Raises :class:`SealError` when a length breaks
    that rule, the key is not 32 bytes or the block index is out of range.
    """
    size = len(plain)
    if len(digest_key) != 32:
        raise SealError("a block digest key has 32 bytes")
    if size > BLOCK_SIZE or (not final and size != BLOCK_SIZE) or (size == 0 and block != 0):
        raise SealError(f"block {block}: {size} bytes (final={final}) breaks the block size rule")
    first = block * (BLOCK_SIZE // CHUNK_SIZE)
    count = max(1, -(-size // CHUNK_SIZE))
    view = memoryview(plain)
    tags = hashlib.blake2b(digest_size=16, key=digest_key)
    chunks = []
    for i in range(count):
        sealed = key._aead.encrypt(
            _chunk_nonce(first + i, final and i == count - 1),
            view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE],
            None,
        )
        tags.update(sealed[-TAG_SIZE:])
        chunks.append(sealed)
    return chunks, tags.digest()
