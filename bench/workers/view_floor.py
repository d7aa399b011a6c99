"""Contender: the floors of the views group, on the plain tape written once to a file.

``--seal``: ChaCha20-Poly1305 (``cryptography``) in one thread, as age's STREAM seals: 64 KiB
chunks, each sealed under one key with the nonce ``chunk index (11 bytes, big-endian) || last
flag``, a 16-byte tag added. With ``--digest`` the tags of each 1 MiB block are also hashed
with keyed BLAKE2b-128, as the age view does to guard against nonce reuse.

``--compress``: the same frames as the zstd view: the tape cut into frames of ``--frame-size``
plain bytes, each compressed into one zstd frame with ``--level``, checksum and content size
written, no dictionary id, single-threaded, by one reused ``zstandard.ZstdCompressor``. With
``--digest`` each compressed frame is also tagged with Poly1305 under a key of its own, as the
zstd view does before it sends a frame again.

The file is read into one reused buffer and the output written to /dev/null, in one thread.
Prints one JSON line: ``bytes`` read, ``out_bytes`` made, ``inproc_s`` (the whole loop: reading,
the work, writing) and ``core_s``: the seconds spent inside the sealing or compressing calls
(and the digests) alone: the floor the goals compare with, reading the file left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

CHUNK = 64 * 1024
BLOCK = 1024 * 1024


def seal(path: str, aead: Any, digest: bool) -> dict[str, Any]:
    """Seal the file at ``path`` with ``aead`` (a ``ChaCha20Poly1305``)."""
    digest_key = os.urandom(32)
    size = os.path.getsize(path)
    chunks = max(1, -(-size // CHUNK))
    per_block = BLOCK // CHUNK
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    clock = time.perf_counter
    core = 0.0
    made = read = 0
    block: Any = None
    with open(path, "rb", buffering=0) as f, open(os.devnull, "wb") as out:
        for index in range(chunks):
            n = f.readinto(buf)
            read += n
            nonce = index.to_bytes(11, "big") + (b"\x01" if index == chunks - 1 else b"\x00")
            t = clock()
            if digest and index % per_block == 0:
                if block is not None:
                    block.digest()
                block = hashlib.blake2b(digest_size=16, key=digest_key)
            sealed = aead.encrypt(nonce, view[:n], None)
            if digest:
                block.update(sealed[-16:])
            core += clock() - t
            out.write(sealed)
            made += len(sealed)
        if block is not None:
            block.digest()
    return {"bytes": read, "out_bytes": made, "core_s": core}


def compress(path: str, compressor: Any, frame_size: int, digest: bool) -> dict[str, Any]:
    """Compress the file at ``path`` in frames of ``frame_size`` with ``compressor``."""
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    tag_key = os.urandom(32)

    def tag(frame: bytes) -> bytes:
        key = hashlib.blake2b(frames.to_bytes(8, "big"), digest_size=32, key=tag_key).digest()
        return Poly1305.generate_tag(key, frame)

    finish: Callable[[bytes], Any] = tag if digest else (lambda frame: None)
    buf = bytearray(frame_size)
    view = memoryview(buf)
    clock = time.perf_counter
    core = 0.0
    made = read = frames = 0
    with open(path, "rb", buffering=0) as f, open(os.devnull, "wb") as out:
        while True:
            n = 0
            while n < frame_size and (got := f.readinto(view[n:])):
                n += got
            if n == 0 and frames > 0:
                break
            t = clock()
            frame = compressor.compress(view[:n])
            finish(frame)
            core += clock() - t
            out.write(frame)
            made += len(frame)
            read += n
            frames += 1
            if n < frame_size:
                break
    return {"bytes": read, "out_bytes": made, "frames": frames, "core_s": core}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tape", required=True, help="the plain tape, as a file")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--seal", action="store_true", help="ChaCha20-Poly1305, 64 KiB chunks")
    kind.add_argument("--compress", action="store_true", help="zstd frames")
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--frame-size", type=int, default=4 * 1024 * 1024)
    p.add_argument("--digest", action="store_true", help="also the digests the view checks")
    args = p.parse_args()
    # The library is loaded before the clock starts, as the atartape worker loads atartape.
    if args.seal:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        aead = ChaCha20Poly1305(os.urandom(32))
        started = time.perf_counter()
        report = seal(args.tape, aead, args.digest)
    else:
        import zstandard

        compressor = zstandard.ZstdCompressor(
            level=args.level,
            write_checksum=True,
            write_content_size=True,
            write_dict_id=False,
            threads=0,
        )
        started = time.perf_counter()
        report = compress(args.tape, compressor, args.frame_size, args.digest)
    report["inproc_s"] = time.perf_counter() - started
    print(json.dumps(report))


if __name__ == "__main__":
    main()
