"""Decode a uuencoded file (libarchive keeps its test archives as ``*.uu``).

Usage: python3 uudecode.py INPUT.uu OUTPUT

Our own small decoder (the ``uu`` module is gone from Python 3.13): it reads the
``begin MODE NAME`` line, decodes each data line with :func:`binascii.a2b_uu` (which uses the
length character at the start of the line) and stops at the ``end`` line.
"""

from __future__ import annotations

import binascii
import sys


def uudecode(text: bytes) -> bytes:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(b"begin "))
    out = bytearray()
    for line in lines[start + 1 :]:
        if line.strip() == b"end":
            return bytes(out)
        if not line:
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines with extra characters; decode only what the length says.
            count = (line[0] - 32) & 63
            out += binascii.a2b_uu(line[: 1 + (count + 2) // 3 * 4])
    raise ValueError("no 'end' line")


def main() -> None:
    source, target = sys.argv[1], sys.argv[2]
    with open(source, "rb") as f:
        data = uudecode(f.read())
    with open(target, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
