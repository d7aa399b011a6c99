"""Raw TAR building blocks for tests: any header, any extension, any mistake, byte by byte."""

from __future__ import annotations

from collections.abc import Iterable

BLOCK = 512
MTIME = 1_600_000_000


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def base256(value: int, width: int) -> bytes:
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    return ((1 << (8 * width)) + value).to_bytes(width, "big")


def fix_checksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def header(
    name: bytes | str,
    *,
    typeflag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    mtime: int = MTIME,
    linkname: bytes | str = b"",
    magic: bytes = b"ustar\x0000",
    prefix: bytes = b"",
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """One header block; ``extra`` writes raw bytes at offsets (sparse fields, ...)."""
    raw_name = name.encode() if isinstance(name, str) else name
    raw_link = linkname.encode() if isinstance(linkname, str) else linkname
    block = bytearray(BLOCK)
    block[0 : len(raw_name[:100])] = raw_name[:100]
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(0, 8)
    block[116:124] = octal(0, 8)
    block[124:136] = octal(size, 12) if 0 <= size < 8**11 else base256(size, 12)
    block[136:148] = octal(mtime, 12) if 0 <= mtime < 8**11 else base256(mtime, 12)
    block[156:157] = typeflag
    block[157 : 157 + len(raw_link[:100])] = raw_link[:100]
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    for offset, value in (extra or {}).items():
        block[offset : offset + len(value)] = value
    return fix_checksum(block)


def member(
    name: bytes | str, content: bytes = b"", *, typeflag: bytes = b"0", **fields: object
) -> bytes:
    return header(name, typeflag=typeflag, size=len(content), **fields) + pad(content)  # type: ignore[arg-type]


def file(name: str, content: bytes = b"payload", **fields: object) -> bytes:
    return member(name, content, **fields)


def directory(name: str, mode: int = 0o755) -> bytes:
    return header(name, typeflag=b"5", mode=mode)


def symlink(name: str, target: str) -> bytes:
    return header(name, typeflag=b"2", linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> bytes:
    return header(name, typeflag=b"1", linkname=target)


def pax_record(key: str, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    body = b" " + key.encode() + b"=" + raw + b"\n"
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(len(body))):
        length += 1
    return str(length).encode() + body


def pax(records: Iterable[tuple[str, bytes | str]], *, typeflag: bytes = b"x") -> bytes:
    payload = b"".join(pax_record(key, value) for key, value in records)
    return member("PaxHeader", payload, typeflag=typeflag)


def gnu_long(kind: bytes, value: str) -> bytes:
    return member("././@LongLink", value.encode() + b"\0", typeflag=kind, magic=b"ustar  \0")


def end(blocks: int = 2) -> bytes:
    return bytes(BLOCK * blocks)


def oldgnu_sparse(
    name: str, regions: list[tuple[int, bytes]], real_size: int, *, mtime: int = MTIME
) -> bytes:
    """An old-GNU sparse member ('S'): 4 map entries in the header, 21 per extension block."""
    entries = [(offset, len(data)) for offset, data in regions] + [(real_size, 0)]
    stored = b"".join(data for _, data in regions)
    head, rest = entries[:4], entries[4:]

    def fields(pairs: list[tuple[int, int]]) -> bytes:
        return b"".join(octal(offset, 12) + octal(length, 12) for offset, length in pairs)

    extra = {386: fields(head), 483: octal(real_size, 12)}
    if rest:
        extra[482] = b"\1"
    out = header(
        name, typeflag=b"S", size=len(stored), magic=b"ustar  \0", mtime=mtime, extra=extra
    )
    while rest:
        chunk, rest = rest[:21], rest[21:]
        block = bytearray(BLOCK)
        block[0 : 24 * len(chunk)] = fields(chunk)
        block[504] = 1 if rest else 0
        out += bytes(block)
    return out + pad(stored)


def pax_sparse_10(name: str, regions: list[tuple[int, bytes]], real_size: int) -> bytes:
    """A PAX 1.0 sparse member: the map at the start of the data."""
    lines = [str(len(regions))] + [f"{o}\n{len(d)}" for o, d in regions]
    map_text = pad(("\n".join(lines) + "\n").encode())
    stored = map_text + b"".join(data for _, data in regions)
    records = [
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", name),
        ("GNU.sparse.realsize", str(real_size)),
    ]
    return pax(records) + member(f"GNUSparseFile.0/{name}", stored)


def expand(regions: list[tuple[int, bytes]], real_size: int) -> bytes:
    out = bytearray(real_size)
    for offset, data in regions:
        out[offset : offset + len(data)] = data
    return bytes(out)
