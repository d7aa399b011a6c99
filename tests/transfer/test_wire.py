"""The pure parts of the transfer protocol: frames, preamble, code, proofs, segment hashing."""

from __future__ import annotations

import hashlib
import random

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import atartape
from atartape.format import wire
from atartape.transfer import new_code
from atartape.transfer.connection import Connection


@pytest.mark.anyio
async def test_frames_reject_damage() -> None:
    async def decode(data: bytes) -> tuple[wire.Kind, bytes]:
        send_stream, receive_stream = anyio.create_memory_object_stream[bytes](1)
        async with send_stream, receive_stream:
            await send_stream.send(data)
            await send_stream.aclose()
            connection = Connection(receive_stream, 5, "peer")  # type: ignore[arg-type]
            return await connection.read_frame()

    frame = wire.encode_data(1234, b"payload")
    assert len(frame) == 5 + 8 + 7 + 4
    kind, payload = await decode(frame)
    assert kind is wire.Kind.DATA and wire.decode_data(payload)[0] == 1234
    assert bytes(wire.decode_data(payload)[1]) == b"payload"
    for position in (0, 3, 10, len(frame) - 1):
        damaged = bytearray(frame)
        damaged[position] ^= 0x10
        with pytest.raises((atartape.TransferProtocolError, anyio.IncompleteRead)):
            await decode(bytes(damaged))
    with pytest.raises(anyio.IncompleteRead):
        await decode(frame[:-1])
    with pytest.raises(atartape.TransferProtocolError, match="unknown frame kind 83"):
        await decode(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_chain() -> None:
    digests = [bytes([i]) * 32 for i in range(3)]
    assert wire.chain_of(digests, 5000, 2048) != wire.chain_of(digests[::-1], 5000, 2048)
    assert wire.chain_of(digests, 5000, 2048) != wire.chain_of(digests, 5000, 1024)
    assert wire.segment_count(4096, 2048) == 2 and wire.segment_count(4097, 2048) == 3


def test_preamble() -> None:
    for mode in wire.MODES:
        line = wire.preamble(mode)
        assert wire.parse_preamble(line) == mode and len(line) < wire.PREAMBLE_MAX
        assert all(wire.preamble_prefix_ok(line[:i]) for i in range(len(line) + 1))
    assert not wire.preamble_prefix_ok(b"HTTP/1.1 400 Bad Request\r\n")
    assert not wire.preamble_prefix_ok(b"\x01\x00\x00\x00")  # a frame: an older version
    with pytest.raises(atartape.TransferProtocolError, match=r"HTTP/1\.1 400"):
        wire.parse_preamble(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(atartape.TransferProtocolError, match="atartape-transfer/1, not"):
        wire.parse_preamble(b"ATARTAPE-TRANSFER/1 tls\r\n")
    with pytest.raises(atartape.TransferProtocolError, match="unknown mode"):
        wire.parse_preamble(b"ATARTAPE-TRANSFER/2 rot13\r\n")
    with pytest.raises(ValueError, match="unknown mode"):
        wire.preamble("rot13")


def test_codes() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == 19 and code.count("-") == 3
        assert wire.normalize_code(code) == code
        assert wire.normalize_code(code.upper().replace("-", " ")) == code
        assert wire.normalize_code(code.replace("-", "")) == code
    assert wire.normalize_code("T3ST C0DE OOOO OOO1") == "t3st-c0de-0000-0001"
    assert wire.normalize_code("ilil-0000-0000-0000") == "1111-0000-0000-0000"
    for bad in ("", "t3st-c0de", "t3st-c0de-0000-00011", "t3st-c0de-0000-000u", "ä" * 16):
        with pytest.raises(ValueError, match="16 letters and digits"):
            wire.normalize_code(bad)
    with pytest.raises(ValueError, match="bytes"):
        wire.format_code(b"short")
    # Every bit counts: 80 random bits, 5 per symbol.
    assert wire.format_code(bytes(10)) == "0000-0000-0000-0000"
    assert wire.format_code(b"\xff" * 10) == "zzzz-zzzz-zzzz-zzzz"
    assert wire.format_code(bytes(9) + b"\x01") == "0000-0000-0000-0001"


def test_proofs_bind_role_certificate_and_nonces() -> None:
    key = wire.code_key("t3st-c0de-0000-0001")
    assert key == wire.code_key("T3ST C0DE 0000 OOO1") and len(key) == 32
    assert key != wire.code_key("t3st-c0de-0000-0002")
    nonces = (b"r" * 32, b"s" * 32)
    proof = wire.auth_proof(key, "sender", b"certificate", nonces)
    assert wire.proof_matches(proof, wire.auth_proof(key, "sender", b"certificate", nonces))
    others = [
        wire.auth_proof(key, "receiver", b"certificate", nonces),
        wire.auth_proof(key, "sender", b"another certificate", nonces),
        wire.auth_proof(key, "sender", b"certificate", (b"R" * 32, b"s" * 32)),
        wire.auth_proof(key, "sender", b"certificate", nonces[::-1]),
        wire.auth_proof(wire.code_key("t3st-c0de-0000-0002"), "sender", b"certificate", nonces),
    ]
    assert not any(wire.proof_matches(proof, other) for other in others)
    with pytest.raises(ValueError, match="role"):
        wire.auth_proof(key, "mallory", b"", nonces)


@settings(deadline=None)  # hashing a few KB, but other tests may load the machine
@given(
    total=st.integers(1, 5000),
    size=st.integers(1, 700),
    seed=st.integers(0, 2**32),
)
def test_segment_hasher_matches_hashlib(total: int, size: int, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(total)
    count = wire.segment_count(total, size)
    first = rng.randrange(count)
    expected = [
        (i, hashlib.sha256(data[i * size : wire.segment_end(i, total, size)]).digest())
        for i in range(first, count)
    ]
    hasher = wire.SegmentHasher(total, size, first)
    position, got = first * size, []
    while position < total:  # cut anywhere: across segments, inside them
        step = rng.randint(0, 2 * size)
        got += hasher.feed(memoryview(data)[position : position + step])
        position = min(position + step, total)
    assert got == expected and hasher.position == total and hasher.room == 0
    with pytest.raises(ValueError, match="go past"):
        hasher.feed(b"x")


def frame_message(frame: bytes) -> dict[str, object]:
    kind, length = wire.decode_head(frame[: wire.HEAD_SIZE])
    payload = frame[wire.HEAD_SIZE : wire.HEAD_SIZE + length]
    wire.check_frame(kind, frame[: wire.HEAD_SIZE], payload, frame[wire.HEAD_SIZE + length :])
    assert kind is wire.Kind.ERROR
    return wire.decode_message(kind, payload)


def test_refusals_round_trip_and_read_as_any_version_writes_them() -> None:
    refusal = wire.PeerRefusal(wire.Refusal.DAMAGED_PARTIAL, "OUT.part is damaged\nat byte 9", 9)
    message = frame_message(wire.encode_refusal(refusal))
    # What a peer of protocol 2 before refusal reasons reads: an ERROR refusal and one line.
    assert message["code"] == "refused" and message["message"] == "OUT.part is damaged at byte 9"
    assert wire.decode_refusal(message) == wire.PeerRefusal(
        wire.Refusal.DAMAGED_PARTIAL, "OUT.part is damaged at byte 9", 9
    )
    # What such an older peer sends; and a reason or offset this version does not know.
    older = {"code": "refused", "message": "wrong code"}
    assert wire.decode_refusal(older) == wire.PeerRefusal(wire.Refusal.OTHER, "wrong code")
    newer = {"code": "refused", "reason": "moon-phase", "message": 7, "offset": -1}
    assert wire.decode_refusal(newer) == wire.PeerRefusal(wire.Refusal.OTHER, "no reason given")
    assert wire.decode_refusal({"code": "refused", "offset": True}) is not None
    assert wire.decode_refusal({"code": "failed", "message": "disk full"}) is None


def test_a_peers_refusal_becomes_a_refused_error_with_its_reason() -> None:
    from atartape.transfer.connection import peer_error

    message = frame_message(
        wire.encode_refusal(wire.PeerRefusal(wire.Refusal.ANOTHER_TAPE, "it holds another", 0))
    )
    error = peer_error(message, "receiver")
    assert isinstance(error, atartape.TransferRefusedError)
    assert (error.reason, error.offset) == ("another-tape", 0)
    assert str(error) == "the receiver refused: it holds another"
    assert not isinstance(peer_error({"code": "failed"}, "sender"), atartape.TransferRefusedError)
