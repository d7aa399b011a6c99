"""atartape.format.age: STREAM arithmetic, chunk sealing, headers, and interop with age and rage."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("cryptography", reason="the age format needs the cryptography package")

from atartape.format import age
from atartape.format.age import (
    CHUNK_SIZE,
    SEALED_CHUNK_SIZE,
    TAG_SIZE,
    ChunkError,
    HeaderError,
    ScryptIdentity,
    ScryptRecipient,
    SealedLayout,
    SealError,
    X25519Identity,
)

C = CHUNK_SIZE
T = TAG_SIZE
S = SEALED_CHUNK_SIZE

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
SETSID = shutil.which("setsid")
needs_age = pytest.mark.skipif(
    AGE is None or AGE_KEYGEN is None,
    reason="the age and age-keygen binaries are missing (Debian package: age)",
)
needs_age_tty = pytest.mark.skipif(
    AGE is None or SETSID is None or not hasattr(os, "openpty"),
    reason="age passphrase tests need the age binary, util-linux setsid and a pty",
)

INTEROP_SIZES = [0, 1, C - 1, C, C + 1, 3 * C]
BOUNDARY_SIZES = [0, 1, 2, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, 3 * C, 3 * C + 7]


def fixed_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic rng for tests (never for real keys)."""
    generator = random.Random(seed)
    return generator.randbytes


IDENTITY = X25519Identity(bytes(range(1, 33)))
OTHER = X25519Identity(bytes(range(101, 133)))
FILE_KEY = bytes(range(16))


@cache
def plain_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@cache
def prefix_of(recipients: tuple[age.X25519Recipient, ...] = (IDENTITY.recipient,)) -> bytes:
    return age.make_header(FILE_KEY, list(recipients), rng=fixed_rng(7))


@cache
def sealed_of(size: int) -> bytes:
    prefix = prefix_of()
    layout = SealedLayout(len(prefix), size)
    key = age.payload_key(FILE_KEY, prefix[-16:])
    return age.seal_window(key, layout, prefix, 0, layout.size, plain_of(size))


# --------------------------------------------------------------------------- arithmetic

header_sizes = st.integers(0, 5000)
plain_sizes = st.one_of(
    st.integers(0, 6 * C),
    st.sampled_from(BOUNDARY_SIZES),
    st.integers(0, 1 << 50),
    st.integers(0, 1 << 20).map(lambda k: k * C),
)


@given(header_sizes, plain_sizes)
@example(0, 0)
@example(100, C)
@example(100, C + 1)
def test_sealed_size_formula(header: int, plain: int) -> None:
    chunks = max(1, -(-plain // C))
    assert age.chunk_count(plain) == chunks
    assert age.sealed_size(header, plain) == header + plain + chunks * T
    layout = SealedLayout(header, plain)
    assert layout.size == age.sealed_size(header, plain)
    # The chunks add up: every chunk but the last is full, the last holds the rest.
    last = layout.chunk_count - 1
    assert layout.chunk_sealed_range(last)[1] == layout.size
    assert layout.chunk_plain_range(last)[1] == plain
    assert layout.chunk_sealed_range(0)[0] == header
    assert age.plain_size_of(header, layout.size) == plain


@given(header_sizes, plain_sizes)
def test_sealed_size_is_strictly_increasing(header: int, plain: int) -> None:
    assert age.sealed_size(header, plain + 1) > age.sealed_size(header, plain)


@pytest.mark.parametrize("header", [0, 1, 217])
def test_plain_size_of_is_exact_inverse(header: int) -> None:
    """Every total size up to 4 chunks: plain_size_of answers iff some plain size gives it."""
    image = {age.sealed_size(header, n): n for n in range(4 * C + 2)}
    top = age.sealed_size(header, 4 * C + 1)
    for total in range(top + 1):
        if total in image:
            assert age.plain_size_of(header, total) == image[total]
        else:
            with pytest.raises(SealError):
                age.plain_size_of(header, total)


def test_plain_size_of_rejects_empty_final_chunk_and_short_files() -> None:
    with pytest.raises(SealError):
        age.plain_size_of(10, 10 + S + T)  # a full chunk and then an empty final chunk
    with pytest.raises(SealError):
        age.plain_size_of(10, 10 + T - 1)  # not even a tag
    assert age.plain_size_of(10, 10 + T) == 0
    assert age.plain_size_of(10, 10 + S) == C


@given(header_sizes, plain_sizes, st.data())
def test_chunks_tile_the_tape(header: int, plain: int, data: st.DataObject) -> None:
    layout = SealedLayout(header, plain)
    index = data.draw(st.integers(0, layout.chunk_count - 1))
    start, end = layout.chunk_sealed_range(index)
    plain_start, plain_end = layout.chunk_plain_range(index)
    assert start == header + index * S
    assert end - start == plain_end - plain_start + T
    assert plain_start == index * C
    if index < layout.chunk_count - 1:
        assert plain_end - plain_start == C
        assert layout.chunk_sealed_range(index + 1)[0] == end
        assert layout.chunk_plain_range(index + 1)[0] == plain_end
        assert not layout.is_last(index)
    else:
        assert layout.is_last(index)
        assert end == layout.size
        # The final chunk is non-empty unless the whole payload is empty.
        assert plain_end - plain_start > 0 or plain == 0


@given(header_sizes, plain_sizes, st.data())
def test_chunk_of_matches_divmod(header: int, plain: int, data: st.DataObject) -> None:
    layout = SealedLayout(header, plain)
    offset = data.draw(st.integers(0, layout.size - 1))
    index = layout.chunk_of(offset)
    if offset < header:
        assert index is None
    else:
        assert index == divmod(offset - header, C + T)[0]
        start, end = layout.chunk_sealed_range(index)
        assert start <= offset < end


@pytest.mark.parametrize("header", [0, 1, 37, 200])
@pytest.mark.parametrize("plain", BOUNDARY_SIZES)
def test_every_boundary(header: int, plain: int) -> None:
    """At every chunk edge (and one byte either side) the mapping agrees with the ranges."""
    layout = SealedLayout(header, plain)
    edges = {0, header, layout.size}
    for index in range(layout.chunk_count):
        edges.update(layout.chunk_sealed_range(index))
    for edge in sorted(edges):
        for offset in (edge - 1, edge, edge + 1):
            if not 0 <= offset < layout.size:
                continue
            found = layout.chunk_of(offset)
            if found is None:
                assert offset < header
                continue
            index = found
            start, end = layout.chunk_sealed_range(index)
            assert start <= offset < end
            chunks = layout.chunks_for_sealed_range(offset, offset + 1)
            assert list(chunks) == [index]
    with pytest.raises(SealError):
        layout.chunk_of(layout.size)
    with pytest.raises(SealError):
        layout.chunk_of(-1)
    with pytest.raises(SealError):
        layout.chunk_sealed_range(layout.chunk_count)


def _window(layout: SealedLayout, data: st.DataObject, size: int) -> tuple[int, int]:
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, min(size, start + 3 * S)), label="end")
    return start, end


@given(header_sizes, plain_sizes, st.data())
def test_chunks_for_sealed_range_are_exactly_the_overlapping_chunks(
    header: int, plain: int, data: st.DataObject
) -> None:
    layout = SealedLayout(header, plain)
    start, end = _window(layout, data, layout.size)
    chunks = layout.chunks_for_sealed_range(start, end)

    def overlaps(index: int) -> bool:
        chunk_start, chunk_end = layout.chunk_sealed_range(index)
        return chunk_start < end and start < chunk_end

    for index in chunks:
        assert overlaps(index)
    if chunks:
        assert chunks.start == 0 or not overlaps(chunks.start - 1)
        assert chunks.stop == layout.chunk_count or not overlaps(chunks.stop)
        plain_start, plain_end = layout.plain_range_for_sealed_range(start, end)
        assert plain_start == layout.chunk_plain_range(chunks[0])[0]
        assert plain_end == layout.chunk_plain_range(chunks[-1])[1]
    else:
        assert end <= header or start == end
        assert layout.plain_range_for_sealed_range(start, end) == (0, 0)


@given(header_sizes, plain_sizes, st.data())
def test_sealed_range_for_plain_range_round_trips(
    header: int, plain: int, data: st.DataObject
) -> None:
    layout = SealedLayout(header, plain)
    start, end = _window(layout, data, plain)
    sealed_start, sealed_end = layout.sealed_range_for_plain_range(start, end)
    if start == end:
        assert sealed_start == sealed_end
        return
    # Whole chunks: the first holds plain byte start, the last plain byte end - 1.
    assert layout.chunk_of(sealed_start) == start // C
    assert layout.chunk_of(sealed_end - 1) == (end - 1) // C
    assert layout.chunk_sealed_range(start // C)[0] == sealed_start
    assert layout.chunk_sealed_range((end - 1) // C)[1] == sealed_end
    # And back: producing those sealed bytes needs exactly whole-chunk plain bytes around it.
    plain_start, plain_end = layout.plain_range_for_sealed_range(sealed_start, sealed_end)
    assert plain_start <= start < end <= plain_end
    assert plain_start % C == 0
    assert plain_end % C == 0 or plain_end == plain
    assert plain_end - plain_start < (end - start) + 2 * C


@given(plain_sizes, st.data())
def test_digest_blocks_hold_whole_chunks(plain: int, data: st.DataObject) -> None:
    layout = SealedLayout(100, plain)
    index = data.draw(st.integers(0, layout.chunk_count - 1))
    (block,) = layout.blocks_for_chunks(range(index, index + 1))
    block_start, block_end = layout.block_plain_range(block)
    chunk_start, chunk_end = layout.chunk_plain_range(index)
    assert block_start <= chunk_start <= chunk_end <= block_end
    assert block_start % age.BLOCK_SIZE == 0


def test_bad_layout_arguments() -> None:
    with pytest.raises(SealError):
        SealedLayout(-1, 0)
    with pytest.raises(SealError):
        SealedLayout(0, -1)
    layout = SealedLayout(10, 100)
    with pytest.raises(SealError):
        layout.chunks_for_sealed_range(5, 4)
    with pytest.raises(SealError):
        layout.sealed_range_for_plain_range(0, 101)


# --------------------------------------------------------------------------- chunks and windows


def test_payload_key_is_hkdf_of_file_key_and_nonce() -> None:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    nonce = bytes(range(50, 66))
    expected = HKDF(SHA256(), 32, salt=nonce, info=b"payload").derive(FILE_KEY)
    assert age.payload_key(FILE_KEY, nonce).key == expected
    with pytest.raises(SealError):
        age.payload_key(FILE_KEY[:15], nonce)
    with pytest.raises(SealError):
        age.payload_key(FILE_KEY, nonce[:15])


def test_seal_chunk_nonce_and_size_rules() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = age.payload_key(FILE_KEY, bytes(16))
    aead = ChaCha20Poly1305(key.key)
    full = bytes(C)
    # Nonce: 11-byte big-endian counter, then 0x01 for the final chunk.
    assert age.seal_chunk(key, 5, full, False) == aead.encrypt(
        (5).to_bytes(11, "big") + b"\x00", full, None
    )
    assert age.seal_chunk(key, 7, b"xy", True) == aead.encrypt(
        (7).to_bytes(11, "big") + b"\x01", b"xy", None
    )
    assert len(age.seal_chunk(key, 0, b"", True)) == T  # the empty payload
    assert len(age.seal_chunk(key, 3, full, True)) == S  # a full final chunk is fine
    with pytest.raises(SealError):
        age.seal_chunk(key, 0, full[:-1], False)  # a non-final chunk must be full
    with pytest.raises(SealError):
        age.seal_chunk(key, 1, b"", True)  # empty final chunk after others
    with pytest.raises(SealError):
        age.seal_chunk(key, 0, full + b"x", True)
    with pytest.raises(SealError):
        age.seal_chunk(key, -1, full, False)
    with pytest.raises(SealError):
        age.seal_chunk(key, 1 << 88, full, False)


def test_open_chunk_authenticates_index_position_and_bytes() -> None:
    key = age.payload_key(FILE_KEY, bytes(16))
    sealed = age.seal_chunk(key, 2, b"hello", True)
    assert age.open_chunk(key, 2, sealed, True) == b"hello"
    with pytest.raises(ChunkError):
        age.open_chunk(key, 3, sealed, True)  # reordered
    with pytest.raises(ChunkError):
        age.open_chunk(key, 2, sealed, False)  # not the final chunk (and short)
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(ChunkError):
        age.open_chunk(key, 2, tampered, True)
    other = age.payload_key(FILE_KEY, bytes(15) + b"\x01")
    with pytest.raises(ChunkError):
        age.open_chunk(other, 2, sealed, True)
    full = age.seal_chunk(key, 0, bytes(C), False)
    with pytest.raises(ChunkError):
        age.open_chunk(key, 0, full, True)  # a non-final chunk presented as final
    with pytest.raises(ChunkError):
        age.open_chunk(key, 1, age.seal_chunk(key, 0, b"", True), True)
    with pytest.raises(ChunkError):
        age.open_chunk(key, 0, b"short", True)


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 3 * C, 3 * C + 5])
def test_each_chunk_sealed_alone_equals_the_full_sealing(size: int) -> None:
    """What makes resume possible: chunk i depends only on the key, i and its own plaintext."""
    full = sealed_of(size)
    prefix = prefix_of()
    layout = SealedLayout(len(prefix), size)
    assert len(full) == layout.size
    assert full[: len(prefix)] == prefix
    key = age.payload_key(FILE_KEY, prefix[-16:])
    plain = plain_of(size)
    for index in range(layout.chunk_count):
        plain_start, plain_end = layout.chunk_plain_range(index)
        alone = age.seal_chunk(key, index, plain[plain_start:plain_end], layout.is_last(index))
        sealed_start, sealed_end = layout.chunk_sealed_range(index)
        assert alone == full[sealed_start:sealed_end]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from([0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5]), st.data())
def test_seal_window_is_a_slice_of_the_full_sealing(size: int, data: st.DataObject) -> None:
    full = sealed_of(size)
    prefix = prefix_of()
    layout = SealedLayout(len(prefix), size)
    key = age.payload_key(FILE_KEY, prefix[-16:])
    start, end = _window(layout, data, layout.size)
    plain_start, plain_end = layout.plain_range_for_sealed_range(start, end)
    window = age.seal_window(key, layout, prefix, start, end, plain_of(size)[plain_start:plain_end])
    assert window == full[start:end]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from([1, C - 1, C, C + 1, 2 * C, 3 * C + 5]), st.data())
def test_open_window_reads_any_plain_range(size: int, data: st.DataObject) -> None:
    full = sealed_of(size)
    prefix = prefix_of()
    layout = SealedLayout(len(prefix), size)
    key = age.payload_key(FILE_KEY, prefix[-16:])
    start, end = _window(layout, data, size)
    sealed_start, sealed_end = layout.sealed_range_for_plain_range(start, end)
    got = age.open_window(key, layout, start, end, full[sealed_start:sealed_end])
    assert got == plain_of(size)[start:end]


def test_window_length_checks() -> None:
    prefix = prefix_of()
    layout = SealedLayout(len(prefix), 10)
    key = age.payload_key(FILE_KEY, prefix[-16:])
    with pytest.raises(SealError):
        age.seal_window(key, layout, prefix, 0, layout.size, b"short")
    with pytest.raises(SealError):
        age.seal_window(key, layout, prefix[:-1], 0, layout.size, bytes(10))
    with pytest.raises(SealError):
        age.open_window(key, layout, 0, 10, b"")


def test_open_bytes_detects_truncation_and_reordering() -> None:
    size = 2 * C + 10
    full = sealed_of(size)
    assert age.open_bytes(full, [IDENTITY]) == plain_of(size)
    with pytest.raises(SealError):
        age.open_bytes(full[:-1], [IDENTITY])
    header = len(prefix_of())
    # Dropping the final chunk leaves a full chunk that is not marked final.
    with pytest.raises(ChunkError):
        age.open_bytes(full[: header + 2 * S], [IDENTITY])
    swapped = full[:header] + full[header + S : header + 2 * S] + full[header : header + S]
    with pytest.raises(ChunkError):
        age.open_bytes(swapped + full[header + 2 * S :], [IDENTITY])


@pytest.mark.parametrize("size", [0, 1, C, C + 1, age.BLOCK_SIZE - 1, age.BLOCK_SIZE])
def test_a_sealed_block_is_its_chunks_and_the_keyed_digest_of_their_tags(size: int) -> None:
    nonce = bytes(16)
    key = age.payload_key(FILE_KEY, nonce)
    digest_key = age.block_digest_key(FILE_KEY, nonce)
    plain = plain_of(size)
    chunks, digest = age.seal_block(key, digest_key, 3 if size else 0, plain, final=True)
    first = 3 * (age.BLOCK_SIZE // C) if size else 0
    count = max(1, -(-size // C))
    expected = [
        age.seal_chunk(key, first + i, plain[i * C : (i + 1) * C], i == count - 1)
        for i in range(count)
    ]
    assert chunks == expected
    tags = b"".join(chunk[-16:] for chunk in chunks)
    assert digest == hashlib.blake2b(tags, digest_size=16, key=digest_key).digest()
    other_key = age.block_digest_key(bytes(16), nonce)
    assert age.seal_block(key, other_key, 3 if size else 0, plain, final=True)[1] != digest


def test_one_changed_byte_changes_the_block_digest() -> None:
    nonce = bytes(16)
    key = age.payload_key(FILE_KEY, nonce)
    digest_key = age.block_digest_key(FILE_KEY, nonce)
    plain = plain_of(age.BLOCK_SIZE)
    digest = age.seal_block(key, digest_key, 0, plain, final=False)[1]
    for at in (0, C - 1, C, age.BLOCK_SIZE - 1):
        changed = plain[:at] + bytes([plain[at] ^ 1]) + plain[at + 1 :]
        assert age.seal_block(key, digest_key, 0, changed, final=False)[1] != digest
    # The same bytes as the final block are other chunks (the last flag is in the nonce).
    assert age.seal_block(key, digest_key, 0, plain, final=True)[1] != digest


def test_block_lengths_are_checked() -> None:
    key = age.payload_key(FILE_KEY, bytes(16))
    digest_key = age.block_digest_key(FILE_KEY, bytes(16))
    with pytest.raises(SealError):
        age.seal_block(key, digest_key, 0, bytes(age.BLOCK_SIZE + 1), final=True)
    with pytest.raises(SealError):
        age.seal_block(key, digest_key, 0, bytes(10), final=False)
    with pytest.raises(SealError):
        age.seal_block(key, digest_key, 1, b"", final=True)
    with pytest.raises(SealError):
        age.seal_block(key, digest_key[:16], 0, bytes(10), final=True)


def test_block_ranges() -> None:
    layout = age.SealedLayout(100, 2 * age.BLOCK_SIZE + 5)
    assert layout.block_count == 3
    per_block = age.BLOCK_SIZE // C
    assert layout.block_sealed_range(0) == (100, 100 + per_block * S)
    assert layout.block_sealed_range(2) == (100 + 2 * per_block * S, layout.size)
    assert age.SealedLayout(100, 0).block_sealed_range(0) == (100, 116)


# --------------------------------------------------------------------------- Bech32 and keys

BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",  # 90 characters, the BIP 173 limit
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BIP173_INVALID = [
    "\x201nwldj5",
    "\x7f1axkwrx",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
    "A12uEL5L",
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bech32_valid_vectors_round_trip(text: str) -> None:
    hrp, data = age.bech32_decode(text)
    assert hrp == text.lower()[: text.rfind("1")]
    assert age.bech32_encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", BIP173_INVALID)
def test_bech32_invalid_vectors(text: str) -> None:
    with pytest.raises(SealError):
        age.bech32_decode(text)


def test_spec_key_pair() -> None:
    """The identity and recipient printed in the age specification."""
    identity = age.parse_identity(
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
    )
    assert identity.secret_key == b"\x42" * 32
    recipient = identity.recipient
    assert str(recipient) == "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
    assert age.parse_recipient(str(recipient)) == recipient
    assert str(identity).startswith("AGE-SECRET-KEY-1")
    assert age.parse_identity(str(identity)) == identity
    assert "42" not in repr(identity) and "B" * 4 not in repr(identity)


def test_key_parsing_errors() -> None:
    with pytest.raises(SealError):
        age.parse_recipient("age1qqqq")
    with pytest.raises(SealError):  # a valid Bech32 string with another prefix
        age.parse_recipient(age.bech32_encode("age1pq", bytes(32)))
    with pytest.raises(SealError):  # the secret key is not a recipient
        age.parse_recipient(str(IDENTITY))
    with pytest.raises(SealError):
        age.parse_identity(str(IDENTITY.recipient))
    with pytest.raises(SealError):
        age.parse_recipient(age.bech32_encode("age", bytes(31)))
    text = f"# created: today\n# public key: {IDENTITY.recipient}\n{IDENTITY}\n\n{OTHER}\n"
    assert age.parse_identities(text) == (IDENTITY, OTHER)
    with pytest.raises(SealError, match="line 2"):
        age.parse_identities(f"{IDENTITY}\nnot a key\n")
    with pytest.raises(SealError):
        age.parse_identities("# nothing\n")


# --------------------------------------------------------------------------- headers

_B64 = "[A-Za-z0-9+/]"


def test_header_layout_and_determinism() -> None:
    recipients = [IDENTITY.recipient, OTHER.recipient]
    prefix = age.make_header(FILE_KEY, recipients, rng=fixed_rng(1))
    assert prefix == age.make_header(FILE_KEY, recipients, rng=fixed_rng(1))
    assert prefix != age.make_header(FILE_KEY, recipients, rng=fixed_rng(2))
    text, nonce = prefix[:-16], prefix[-16:]
    rng = fixed_rng(1)
    rng(32)
    rng(32)
    assert nonce == rng(16)  # drawn after one ephemeral secret per stanza
    pattern = (
        rf"age-encryption\.org/v1\n"
        rf"(-> X25519 {_B64}{{43}}\n{_B64}{{43}}\n){{2}}"
        rf"--- {_B64}{{43}}\n"
    )
    assert re.fullmatch(pattern, text.decode("ascii"))
    assert FILE_KEY not in prefix and base64.b64encode(FILE_KEY).rstrip(b"=") not in prefix
    assert age.header_length(prefix + b"payload") == len(prefix)
    for identity in (IDENTITY, OTHER):
        opened = age.open_header(prefix + b"rest", [identity])
        assert opened.file_key == FILE_KEY
        assert opened.header_size == len(prefix)
        assert opened.payload_nonce == nonce
        assert "file_key" not in repr(opened)


def test_header_length_of_every_prefix() -> None:
    prefix = age.make_header(FILE_KEY, [IDENTITY.recipient, OTHER.recipient], rng=fixed_rng(3))
    for cut in range(len(prefix)):
        assert age.header_length(prefix[:cut]) is None
    assert age.header_length(prefix) == len(prefix)
    with pytest.raises(HeaderError):
        age.header_length(b"age-encryption.org/v2\n")
    with pytest.raises(HeaderError):
        age.header_length(b"PK\x03\x04")
    with pytest.raises(HeaderError):
        age.open_header(prefix[:-1], [IDENTITY])


def test_open_header_refusals() -> None:
    prefix = age.make_header(FILE_KEY, [IDENTITY.recipient], rng=fixed_rng(4))
    with pytest.raises(HeaderError, match="no identity"):
        age.open_header(prefix, [OTHER])
    with pytest.raises(HeaderError, match="no identity"):
        age.open_header(prefix, [ScryptIdentity(b"pw")])
    # A different MAC (the first character changed) is caught.
    mac_at = prefix.index(b"\n--- ") + 5
    flipped = b"B" if prefix[mac_at : mac_at + 1] == b"A" else b"A"
    with pytest.raises(HeaderError, match="MAC"):
        age.open_header(prefix[:mac_at] + flipped + prefix[mac_at + 1 :], [IDENTITY])
    # A changed share (another ephemeral key) no longer unwraps.
    share_at = prefix.index(b"X25519 ") + 7
    flipped = b"B" if prefix[share_at : share_at + 1] == b"A" else b"A"
    with pytest.raises(HeaderError):
        age.open_header(prefix[:share_at] + flipped + prefix[share_at + 1 :], [IDENTITY])
    assert age.check_file_key(prefix, FILE_KEY).header_size == len(prefix)
    with pytest.raises(HeaderError):
        age.check_file_key(prefix, bytes(16))


def _header(stanzas: Sequence[bytes], file_key: bytes = FILE_KEY) -> bytes:
    """A header with the given raw stanza text and a correct MAC, and a zero nonce."""
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.hmac import HMAC
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    covered = b"age-encryption.org/v1\n" + b"".join(stanzas) + b"---"
    hmac_key = HKDF(SHA256(), 32, salt=b"", info=b"header").derive(file_key)
    mac = HMAC(hmac_key, SHA256())
    mac.update(covered)
    return covered + b" " + base64.b64encode(mac.finalize()).rstrip(b"=") + b"\n" + bytes(16)


def _x25519_stanza(identity: X25519Identity = IDENTITY, seed: int = 9) -> bytes:
    prefix = age.make_header(FILE_KEY, [identity.recipient], rng=fixed_rng(seed))
    return prefix[prefix.index(b"\n") + 1 : prefix.index(b"---")]


def test_grease_and_unknown_stanzas_are_skipped() -> None:
    grease = b"-> grease !#$ x\n" + b"A" * 64 + b"\n" + b"A" * 10 + b"\n"
    empty = b"-> empty\n\n"
    prefix = _header([grease, empty, _x25519_stanza()])
    assert age.open_header(prefix, [IDENTITY]).file_key == FILE_KEY


@pytest.mark.parametrize(
    ("stanza", "error"),
    [
        (b"-> X25519\nAAAA\n", "two arguments"),  # missing share
        (b"-> X25519 " + b"A" * 42 + b"\n" + b"A" * 43 + b"\n", "32 bytes"),  # short share
        (b"-> X25519 " + b"A" * 43 + b"=\n" + b"A" * 43 + b"\n", "base64"),  # padding
        (b"-> X25519 " + b"A" * 42 + b"B\n" + b"A" * 43 + b"\n", "base64"),  # not canonical
        (b"-> X25519 " + b"A" * 43 + b"\n" + b"A" * 64 + b"\n", "stanza body"),  # no final line
        (b"-> X25519  " + b"A" * 43 + b"\n" + b"A" * 43 + b"\n", "arguments"),  # empty argument
        (b"-> \n\n", "arguments"),
        (b"->X25519\n\n", "header line"),
        (b"-> X25519 " + b"A" * 43 + b"\n" + b"A" * 42 + b"\r\n", "stanza body"),
        (b"-> X25519 " + b"A" * 43 + b"\n" + b"A" * 65 + b"\n", "stanza body"),
    ],
)
def test_malformed_stanzas_are_header_errors(stanza: bytes, error: str) -> None:
    with pytest.raises(HeaderError, match=error):
        age.open_header(_header([stanza, _x25519_stanza()]), [IDENTITY])


def test_a_lowercase_stanza_type_does_not_match() -> None:
    stanza = _x25519_stanza().replace(b"-> X25519", b"-> x25519")
    with pytest.raises(HeaderError, match="no identity"):
        age.open_header(_header([stanza]), [IDENTITY])


def test_low_order_share_is_refused() -> None:
    stanza = b"-> X25519 " + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n" + b"A" * 43 + b"\n"
    with pytest.raises(HeaderError, match="zeros"):
        age.open_header(_header([stanza]), [IDENTITY])
    with pytest.raises(SealError):
        age.make_header(FILE_KEY, [age.X25519Recipient(bytes(32))], rng=fixed_rng(1))


def test_mac_line_rules() -> None:
    prefix = _header([_x25519_stanza()])
    assert age.open_header(prefix, [IDENTITY]).file_key == FILE_KEY
    line_start = prefix.index(b"---")
    mac = prefix[line_start + 4 : line_start + 47]
    for bad in (b"---" + mac, b"--- " + mac + b" ", b"---  " + mac, b"--- " + mac[:-1]):
        with pytest.raises(HeaderError):
            age.open_header(prefix[:line_start] + bad + b"\n" + bytes(16), [IDENTITY])
    wrong_key = _header([_x25519_stanza()], file_key=bytes(16))
    with pytest.raises(HeaderError, match="MAC"):
        age.open_header(wrong_key, [IDENTITY])


def test_scrypt_recipient() -> None:
    recipient = ScryptRecipient(b"hunter2", work_factor=4)
    prefix = age.make_header(FILE_KEY, [recipient], rng=fixed_rng(5))
    assert re.fullmatch(
        rf"age-encryption\.org/v1\n-> scrypt {_B64}{{22}} 4\n{_B64}{{43}}\n--- {_B64}{{43}}\n",
        prefix[:-16].decode(),
    )
    assert age.open_header(prefix, [ScryptIdentity(b"hunter2")]).file_key == FILE_KEY
    with pytest.raises(HeaderError, match="no identity"):
        age.open_header(prefix, [ScryptIdentity(b"hunter3")])
    with pytest.raises(HeaderError, match="above the limit"):
        age.open_header(prefix, [ScryptIdentity(b"hunter2")], max_work_factor=3)
    # An X25519 identity ignores the scrypt stanza.
    with pytest.raises(HeaderError, match="no identity"):
        age.open_header(prefix, [IDENTITY])
    assert "hunter2" not in repr(recipient)
    with pytest.raises(SealError):
        age.make_header(FILE_KEY, [recipient, IDENTITY.recipient], rng=fixed_rng(5))
    with pytest.raises(SealError):
        age.make_header(FILE_KEY, [recipient, recipient], rng=fixed_rng(5))
    with pytest.raises(SealError):
        ScryptRecipient(b"pw", work_factor=0)
    with pytest.raises(SealError):
        ScryptRecipient(b"pw", work_factor=31)
    with pytest.raises(SealError):
        ScryptRecipient(b"")


def test_scrypt_stanza_rules() -> None:
    prefix = age.make_header(FILE_KEY, [ScryptRecipient(b"pw", work_factor=2)], rng=fixed_rng(6))
    stanza = prefix[prefix.index(b"\n") + 1 : prefix.index(b"---")]
    args, body = stanza.split(b"\n")[0], stanza.split(b"\n")[1]
    salt = args.split(b" ")[2]
    identity = [ScryptIdentity(b"pw")]
    assert age.open_header(_header([stanza]), identity).file_key == FILE_KEY
    with pytest.raises(HeaderError, match="only stanza"):
        age.open_header(_header([stanza, _x25519_stanza()]), identity)
    with pytest.raises(HeaderError, match="only stanza"):
        age.open_header(_header([stanza, stanza]), identity)
    for factor in (b"02", b"+2", b"0x2", b"2a", b"-2", b"0", b""):
        bad = b"-> scrypt " + salt + b" " + factor + b"\n" + body + b"\n"
        with pytest.raises(HeaderError):
            age.open_header(_header([bad]), identity)
    bad = b"-> scrypt " + salt + b"\n" + body + b"\n"
    with pytest.raises(HeaderError, match="three arguments"):
        age.open_header(_header([bad]), identity)
    bad = b"-> scrypt " + salt[:-2] + b" 2\n" + body + b"\n"
    with pytest.raises(HeaderError):
        age.open_header(_header([bad]), identity)


def test_make_header_argument_checks() -> None:
    with pytest.raises(SealError):
        age.make_header(FILE_KEY[:8], [IDENTITY.recipient], rng=fixed_rng(1))
    with pytest.raises(SealError):
        age.make_header(FILE_KEY, [], rng=fixed_rng(1))
    with pytest.raises(SealError):
        age.make_header(FILE_KEY, [IDENTITY.recipient], rng=lambda n: bytes(n - 1))


# Two vectors of the age test kit (C2SP/CCTV, age/testdata, 0BSD/CC0): the plaintext "age".
TESTKIT_IDENTITY = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
TESTKIT_X25519 = base64.b64decode(
    "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBURWlGMHlwcXIrYnB2Y3FYTnlDVkpwTDdPdXdQZFZ3UEw3"
    "S1FFYkZET0NjCmhqYWJHWHdTTFE5YzNTNkx3MmkrUzJUdTJmaXdRSEhzbGJCTjZCNDFGTEUKLS0tIFd5SnA5Ri85"
    "Rk9aaDdnSmRoZXEyV0lKY3dIZ1ljOE5JVmgzZGR3aHJjTmcK7s9ix86RtDMnTmjU8vkTTLdMW/73vqpSyPC8Dpks"
    "HoMx+2Y="
)
TESTKIT_SCRYPT = base64.b64decode(
    "YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IHNjcnlwdCByRjAvTndibFVISFRwZ1FnUnBlNUNRIDEwCmdVakV5bUZL"
    "TVZYUUVLZE1NSEwyNG9ZZXhqRTNUSUMwTzB6R1NxSjJhVVkKLS0tIElPWGlRWVN0a29UMW12WlcydEZPcVpkaFJW"
    "dmo1OGVnQUJ4L3NXZlpRYmMKGzXG5ofdANo6w3msn3QsIf0YWhuePe1znRSsappQEk24Ztg="
)
TESTKIT_FILE_KEY = bytes.fromhex("59454c4c4f57205355424d4152494e45")


def test_age_testkit_vectors() -> None:
    identity = age.parse_identity(TESTKIT_IDENTITY)
    assert age.open_bytes(TESTKIT_X25519, [identity]) == b"age"
    assert age.open_bytes(TESTKIT_SCRYPT, [ScryptIdentity(b"password")]) == b"age"
    opened = age.open_header(TESTKIT_X25519, [identity])
    assert opened.file_key == TESTKIT_FILE_KEY
    # Re-sealing the payload with the recovered key and nonce gives the vector's bytes.
    layout = SealedLayout(opened.header_size, 3)
    prefix = TESTKIT_X25519[: opened.header_size]
    resealed = age.seal_window(opened.payload_key(), layout, prefix, 0, layout.size, b"age")
    assert resealed == TESTKIT_X25519


# --------------------------------------------------------------------------- interop: age, rage


def _run_with_tty(argv: Sequence[str], answers: Sequence[bytes], timeout: float = 60) -> str:
    """Run ``argv`` with a pty as its controlling terminal, typing ``answers`` at each
    passphrase prompt (age reads passphrases only from the terminal). Returns the output."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([str(SETSID), "-c", *argv], stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    pending = list(answers)
    seen = b""
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                output += chunk
                if pending and b"passphrase" in seen.lower() and seen.rstrip().endswith(b":"):
                    os.write(master, pending.pop(0) + b"\n")
                    seen = b""
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert code == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, X25519Identity, str]:
    """A key made by age-keygen: its file, our parse of it, and age-keygen's public key."""
    if AGE_KEYGEN is None:
        pytest.skip("the age-keygen binary is missing (Debian package: age)")
    path = tmp_path_factory.mktemp("age") / "key.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    (identity,) = age.parse_identities(path.read_text())
    return path, identity, public


@needs_age
def test_age_keygen_keys_parse(keyfile: tuple[Path, X25519Identity, str]) -> None:
    path, identity, public = keyfile
    assert str(identity.recipient) == public
    assert str(identity) in path.read_text()
    assert str(age.parse_recipient(public)) == public


@needs_age
@pytest.mark.parametrize("size", INTEROP_SIZES)
def test_age_decrypts_our_files(
    size: int, tmp_path: Path, keyfile: tuple[Path, X25519Identity, str]
) -> None:
    path, identity, _ = keyfile
    plain = plain_of(size)
    sealed = age.seal_bytes(plain, [OTHER.recipient, identity.recipient], rng=fixed_rng(size))
    (tmp_path / "f.age").write_bytes(sealed)
    out = subprocess.run(
        [str(AGE), "-d", "-i", str(path), str(tmp_path / "f.age")], capture_output=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == plain


@needs_age
@pytest.mark.parametrize("size", INTEROP_SIZES)
def test_we_decrypt_files_from_age(
    size: int, tmp_path: Path, keyfile: tuple[Path, X25519Identity, str]
) -> None:
    _, identity, public = keyfile
    plain = plain_of(size)
    (tmp_path / "plain").write_bytes(plain)
    target = tmp_path / "f.age"
    argv = [str(AGE), "-r", public, "-r", str(OTHER.recipient), "-o", str(target)]
    subprocess.run([*argv, str(tmp_path / "plain")], check=True, capture_output=True)
    data = (tmp_path / "f.age").read_bytes()
    assert len(data) == age.sealed_size(age.header_length(data) or 0, size)
    assert age.open_bytes(data, [identity]) == plain
    assert age.open_bytes(data, [OTHER]) == plain


@needs_age_tty
def test_age_decrypts_our_passphrase_file(tmp_path: Path) -> None:
    plain = plain_of(C + 3)
    sealed = age.seal_bytes(plain, [ScryptRecipient(b"correct horse", work_factor=10)])
    (tmp_path / "f.age").write_bytes(sealed)
    out = tmp_path / "out"
    _run_with_tty([str(AGE), "-d", "-o", str(out), str(tmp_path / "f.age")], [b"correct horse"])
    assert out.read_bytes() == plain


@needs_age_tty
def test_we_decrypt_age_passphrase_file(tmp_path: Path) -> None:
    plain = plain_of(2 * C)
    (tmp_path / "plain").write_bytes(plain)
    target = tmp_path / "f.age"
    argv = [str(AGE), "-p", "-o", str(target), str(tmp_path / "plain")]
    _run_with_tty(argv, [b"battery staple", b"battery staple"])
    data = target.read_bytes()
    assert b"\n-> scrypt " in data[:100]
    assert age.open_bytes(data, [ScryptIdentity(b"battery staple")]) == plain


@pytest.mark.parametrize("size", INTEROP_SIZES)
def test_rage_round_trips(size: int) -> None:
    pyrage = pytest.importorskip("pyrage", reason="pyrage (rage's Python binding) is missing")
    plain = plain_of(size)
    theirs = pyrage.x25519.Identity.from_str(str(IDENTITY))
    assert str(theirs.to_public()) == str(IDENTITY.recipient)
    sealed = age.seal_bytes(plain, [IDENTITY.recipient], rng=fixed_rng(size))
    assert pyrage.decrypt(sealed, [theirs]) == plain
    # rage adds a grease stanza of random kind and length: it is skipped.
    encrypted = pyrage.encrypt(plain, [pyrage.x25519.Recipient.from_str(str(IDENTITY.recipient))])
    assert age.open_bytes(encrypted, [IDENTITY]) == plain


def test_rage_passphrase_round_trips() -> None:
    pyrage = pytest.importorskip("pyrage", reason="pyrage (rage's Python binding) is missing")
    plain = plain_of(C + 1)
    sealed = age.seal_bytes(plain, [ScryptRecipient(b"pw", work_factor=10)])
    assert pyrage.passphrase.decrypt(sealed, "pw") == plain
    encrypted = pyrage.passphrase.encrypt(plain, "pw")
    factor = int(encrypted.split(b"\n")[1].split(b" ")[3])
    assert age.open_bytes(encrypted, [ScryptIdentity(b"pw")], max_work_factor=factor) == plain
