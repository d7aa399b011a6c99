"""Reading archives back: tapes, tarfile and GNU tar archives, range sources, HTTP, errors."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import atartape
from atartape.archive import HttpRangeSource, RangeSource, open_archive
from atartape.errors import ArchiveFormatError, EntryNotFoundError, SourceNotFoundError
from atartape.format.header import BLOCK_SIZE, EntryKind, encode_header, encode_number, padding
from atartape.format.members import MemberType, normalize_name
from tests.helpers import MemorySource, tape_bytes, tree, write

pytestmark = pytest.mark.anyio

MTIME = 1_700_000_000


# --------------------------------------------------------------------------- tapes


async def test_tape_round_trip(dataset: Path, tmp_path: Path) -> None:
    tape, data = await tape_bytes(dataset, tmp_path)
    path = write(tmp_path / "dataset.tar", data)
    entries = [e async for e in tape.entries()]
    kinds = {EntryKind.FILE: "file", EntryKind.DIRECTORY: "dir", EntryKind.SYMLINK: "symlink"}
    async with open_archive(path) as archive:
        members = [m async for m in archive.members()]
        assert [m.name for m in members] == [e.arc_path for e in entries]
        for member, entry in zip(members, entries):
            assert member.type == kinds[entry.kind]
            assert (member.size, member.mode, member.mtime) == (entry.size, entry.mode, entry.mtime)
            assert (member.header_offset, member.linkname) == (entry.start_offset, entry.linkname)
            assert member.data_offset == entry.data_offset
            if member.is_file:
                source = dataset.parent / member.name
                assert await archive.read(member.name) == source.read_bytes()
        big = [c async for c in archive.chunks("dataset/sub/big.bin", chunk_size=100_000)]
        assert (
            max(map(len, big)) == 100_000
            and b"".join(big) == (dataset / "sub/big.bin").read_bytes()
        )
        assert await archive.embedded_index() is None

        dest = tmp_path / "out"
        await archive.extract_all(dest)
        assert tree(dest / "dataset") == tree(dataset)
        for entry in entries:
            extracted = dest / entry.arc_path
            assert int(extracted.lstat().st_mtime) == entry.mtime, entry.arc_path

        single = tmp_path / "single"
        written = await archive.extract("dataset/sub/deeper/c.txt", single)
        assert written == str(single / "dataset/sub/deeper/c.txt")
        assert Path(written).read_bytes() == b"c" * 1000
        assert Path(written).stat().st_mode & 0o777 == 0o600


async def test_lookup_errors(dataset: Path, tmp_path: Path) -> None:
    _, data = await tape_bytes(dataset, tmp_path)
    async with open_archive(MemorySource(data)) as archive:
        with pytest.raises(EntryNotFoundError, match="nope") as info:
            await archive.read("dataset/nope")
        assert isinstance(info.value, KeyError)
        with pytest.raises(atartape.TarTapeError, match="is a dir, not a file"):
            await archive.read("dataset/sub/")
        with pytest.raises(atartape.TarTapeError, match="is a symlink"):
            await archive.read("dataset/link")
        assert (await archive.member("dataset/sub/")).is_dir
    with pytest.raises(SourceNotFoundError, match=r"missing\.tar"):
        async with open_archive(tmp_path / "missing.tar"):
            pass
    with pytest.raises(ArchiveFormatError, match="not a regular file"):
        async with open_archive(tmp_path):
            pass


# --------------------------------------------------------------------------- foreign archives


def tarfile_archive(fmt: int) -> bytes:
    out = io.BytesIO()
    long_names = fmt != tarfile.USTAR_FORMAT

    def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **fields: object) -> None:
        member = tarfile.TarInfo(name)
        member.type, member.mtime, member.size = kind, MTIME, len(data)
        member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        for key, value in fields.items():
            setattr(member, key, value)
        tf.addfile(member, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        add("pkg", tarfile.DIRTYPE)
        add("pkg/readme.txt", data=b"read me\n", mode=0o640)
        add("pkg/empty.txt")
        add("pkg/big.bin", data=bytes(range(256)) * 1200)
        add("pkg/caf\u00e9.txt", data=b"unicode name")
        add("pkg/link", tarfile.SYMTYPE, linkname="readme.txt")
        add("pkg/hard", tarfile.LNKTYPE, linkname="pkg/readme.txt")
        if long_names:
            add("pkg/" + "d" * 110 + "/" + "f" * 130 + ".txt", data=b"long name")
            add("pkg/longlink", tarfile.SYMTYPE, linkname="../pkg/" + "x" * 120)
    return out.getvalue()


@pytest.mark.parametrize(
    "fmt",
    [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
    ids=["ustar", "gnu", "pax"],
)
async def test_tarfile_archives(fmt: int, tmp_path: Path) -> None:
    data = tarfile_archive(fmt)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        expected = {m.name: m for m in tf.getmembers()}
        contents = {
            m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.isreg() or m.islnk()
        }
    async with open_archive(MemorySource(data)) as archive:
        members = [m async for m in archive.members()]
        assert [m.name for m in members] == list(expected)
        for name, content in contents.items():
            assert await archive.read(name) == content, name
        hard = await archive.member("pkg/hard")
        assert hard.type is MemberType.HARDLINK and hard.linkname == "pkg/readme.txt"
        dest = tmp_path / "out"
        await archive.extract_all(dest)
    for name, content in contents.items():
        assert (dest / name).read_bytes() == content
    assert (dest / "pkg/hard").stat().st_ino == (dest / "pkg/readme.txt").stat().st_ino
    assert os.readlink(dest / "pkg/link") == "readme.txt"
    assert (dest / "pkg/readme.txt").stat().st_mode & 0o777 == 0o640
    assert int((dest / "pkg/readme.txt").stat().st_mtime) == MTIME
    assert int((dest / "pkg").stat().st_mtime) == MTIME


def make_tree(root: Path) -> None:
    write(root / "a.txt", "alpha\n")
    write(root / "bin" / "data.bin", os.urandom(70_000))
    write(root / ("n" * 90) / ("m" * 90) / ("o" * 90 + ".txt"), "a path of 280 bytes")
    write(root / "empty.txt", "")
    (root / "hard.txt").hardlink_to(root / "a.txt")
    (root / "sym").symlink_to("bin/data.bin")
    (root / "emptydir").mkdir()


TOOLS = [
    ("gnu", ["tar", "--format=gnu"]),
    ("pax", ["tar", "--format=pax"]),
    ("bsdtar-pax", ["bsdtar", "--format=pax"]),
]


@pytest.mark.parametrize(("label", "command"), TOOLS, ids=[t[0] for t in TOOLS])
async def test_archives_made_by_tar(label: str, command: list[str], tmp_path: Path) -> None:
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    source = tmp_path / "src"
    make_tree(source)
    archive_path = tmp_path / f"{label}.tar"
    subprocess.run([*command, "-cf", str(archive_path), "-C", str(tmp_path), "src"], check=True)
    dest = tmp_path / "out"
    async with open_archive(archive_path) as archive:
        names = {m.name: m async for m in archive.members()}
        long_name = "src/" + "n" * 90 + "/" + "m" * 90 + "/" + "o" * 90 + ".txt"
        assert long_name in names and names["src/sym"].linkname == "bin/data.bin"
        for path in source.rglob("*"):
            if path.is_file() and not path.is_symlink():
                name = "src/" + path.relative_to(source).as_posix()
                assert await archive.read(name) == path.read_bytes()
        await archive.extract_all(dest)
    assert tree(dest / "src") == tree(source)


# --------------------------------------------------------------------------- errors


async def test_truncated_and_corrupt_archives(tmp_path: Path) -> None:
    data = tarfile_archive(tarfile.GNU_FORMAT)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        big = tf.getmember("pkg/big.bin")
        names = [normalize_name(m.name) for m in tf.getmembers()]
        last = tf.getmembers()[-1]
    end_of_members = last.offset_data + last.size + padding(last.size)
    # Cut inside a header or a member's data: the members before the cut, then the error.
    for label, cut, before in (
        ("mid-header", 100, 0),
        ("mid-data", big.offset_data + 1000, names.index("pkg/big.bin")),
    ):
        async with open_archive(MemorySource(data[:cut])) as archive:
            listed = []
            with pytest.raises(ArchiveFormatError, match="truncated") as info:
                async for member in archive.members():
                    listed.append(member.name)
            assert listed == names[:before], label
            assert isinstance(info.value.offset, int), label
            assert f"at byte {info.value.offset}" in str(info.value)
            if before:  # what comes before the cut reads as usual; what follows raises it
                assert await archive.read("pkg/readme.txt") == b"read me\n"
                with pytest.raises(ArchiveFormatError, match="truncated"):
                    await archive.read("pkg/caf\u00e9.txt")
    # Ends at a member boundary, with no end-of-archive marker: read, and reported as possibly
    # truncated (an empty archive is refused: tests/archive/test_ends.py).
    for cut, expected in ((end_of_members, names),):
        async with open_archive(MemorySource(data[:cut])) as archive:
            assert archive.possibly_truncated is None
            assert [m.name async for m in archive.members()] == expected
            assert archive.possibly_truncated is True
            if expected:
                assert await archive.read("pkg/readme.txt") == b"read me\n"
    async with open_archive(MemorySource(data)) as archive:
        assert len([m async for m in archive.members()]) == len(names)
        assert archive.possibly_truncated is False
    corrupt = bytearray(data)
    corrupt[big.offset + 3] ^= 0x20
    async with open_archive(MemorySource(bytes(corrupt))) as archive:
        with pytest.raises(ArchiveFormatError, match="checksum") as info:
            await archive.read("pkg/big.bin")
        assert info.value.offset == big.offset


class VirtualSource:
    """A 9 GiB archive that exists only as arithmetic: a huge zero file, then a small one."""

    HUGE = 9 * 1024**3

    def __init__(self) -> None:
        head = bytearray(encode_header(b"huge.bin", EntryKind.FILE, 0, 0o644, MTIME))
        head[124:136] = encode_number(self.HUGE, 12)  # GNU base-256: past the octal limit
        head[148:156] = b"        "
        head[148:156] = b"%06o\0 " % sum(head)
        self.head = bytes(head)
        self.second = BLOCK_SIZE + self.HUGE
        tail = encode_header(b"small.txt", EntryKind.FILE, 5, 0o644, MTIME) + b"small"
        self.tail = tail + bytes(padding(5)) + bytes(1024)
        self.size = self.second + len(self.tail)
        self.fetched = 0

    async def read_range(self, start: int, end: int) -> bytes:
        self.fetched += end - start
        out = bytearray(end - start)
        for offset, blob in ((0, self.head), (self.second, self.tail)):
            lo, hi = max(start, offset), min(end, offset + len(blob))
            if lo < hi:
                out[lo - start : hi - start] = blob[lo - offset : hi - offset]
        return bytes(out)


async def test_base256_sizes() -> None:
    source = VirtualSource()
    async with open_archive(source, use_index=False) as archive:
        members = [m async for m in archive.members()]
        assert [(m.name, m.size) for m in members] == [
            ("huge.bin", VirtualSource.HUGE),
            ("small.txt", 5),
        ]
        assert members[1].header_offset == source.second
        assert await archive.read("small.txt") == b"small"
        chunks = archive.chunks("huge.bin", chunk_size=4096)
        assert await chunks.__anext__() == bytes(4096)
        await chunks.aclose()
    assert source.fetched < 300_000


# --------------------------------------------------------------------------- random access


async def test_random_access_through_the_embedded_index(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(300):
        write(root / f"part-{i // 50}" / f"record-{i:05d}.json", f'{{"n": {i}}}' * 30)
    write(root / "blob.bin", os.urandom(1_500_000))
    tape, data = await tape_bytes(root, tmp_path, embed_index=True)
    target = await tape.entry("many/part-3/record-00170.json")
    blob = await tape.entry("many/blob.bin")
    expected = (root / "part-3/record-00170.json").read_bytes()

    # Trusted (an archive you made): the first block (what is it: a tar, compressed, sealed?),
    # the tail, the index, then the member's header and content.
    source = MemorySource(data)
    async with open_archive(source, trust_index=True) as archive:
        assert await archive.read(target.arc_path) == expected
        index = await archive.embedded_index()
        assert index is not None and len(index) == tape.entry_count
        tail = [r for r in source.reads if r[1] == len(data) or r[0] >= target.end_offset]
        others = [r for r in source.reads if r not in tail]
        assert others == [
            (0, BLOCK_SIZE),
            (target.start_offset, target.data_offset),
            (target.data_offset, target.data_offset + target.size),
        ]
        index_span = len(data) - 1024 - (index[-1].end_offset)
        assert sum(e - s for s, e in tail) <= max(16 * 1024, 4 * (index_span + 1024))
        assert source.fetched < len(data) // 20
        one_member = source.fetched

        source.reads.clear()
        written = await archive.extract("many/blob.bin", tmp_path / "dest")
        assert written is not None
        assert Path(written).read_bytes() == (root / "blob.bin").read_bytes()
        assert source.fetched == BLOCK_SIZE + blob.size  # the index is read once per archive

    # By default every header confirms the index: its rows guide one scan of the headers,
    # which skips the big file's content, and then the index answers.
    checked = MemorySource(data)
    async with open_archive(checked) as archive:
        assert await archive.read(target.arc_path) == expected
        assert await archive.embedded_index() == index
        assert not any(
            s < blob.end_offset and e > blob.data_offset + 64 * 1024 for s, e in checked.reads[:-1]
        )
        scanned = checked.fetched
        index_member = [m async for m in archive.members()][-1]
        csv = await archive.read(index_member)
        assert csv.startswith(b"name,size,start_block,blocks\r\n") and b"many/blob.bin" in csv

    scanning = MemorySource(data)
    async with open_archive(scanning, use_index=False) as archive:
        assert await archive.read(target.arc_path) == expected
        assert await archive.embedded_index() is None
    assert scanning.fetched > one_member and scanned < 2 * len(data) // 3

    # Extracting everything reads ahead: far fewer range requests than members.
    batched = MemorySource(data)
    async with open_archive(batched) as archive:
        await archive.extract_all(tmp_path / "all")
    assert (tmp_path / "all/many/part-5/record-00299.json").is_file()
    assert len(batched.reads) < 60 and batched.fetched < 2 * len(data)


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving files with Range support (Starlette + uvicorn)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    root = tmp_path_factory.mktemp("served")

    async def ranged(request: Request) -> Response:
        return FileResponse(root / request.path_params["name"])

    async def whole(request: Request) -> Response:
        return Response((root / request.path_params["name"]).read_bytes())

    app = Starlette(routes=[Route("/files/{name}", ranged), Route("/norange/{name}", whole)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", root
    server.should_exit = True
    thread.join(20)
    sock.close()


async def test_http_range_source(
    http_server: tuple[str, Path], dataset: Path, tmp_path: Path
) -> None:
    base, served = http_server
    tape, data = await tape_bytes(dataset, tmp_path, embed_index=True)
    name = f"tape-{os.getpid()}-{time.monotonic_ns()}.tar"
    (served / name).write_bytes(data)
    async with httpx.AsyncClient() as client:
        source: RangeSource = HttpRangeSource(f"{base}/files/{name}", client=client)
        async with open_archive(source) as archive:
            assert archive.size == len(data) == tape.total_size
            assert await archive.read("dataset/a.txt") == b"hello\n"
            index = await archive.embedded_index()
            assert index is not None and [r.name for r in index][:2] == ["dataset", "dataset/a.txt"]
            assert [m.name async for m in archive.members()][-1].startswith(".tarindex_")
        with pytest.raises(atartape.TarTapeError, match="does not serve byte ranges"):
            async with open_archive(HttpRangeSource(f"{base}/norange/{name}", client=client)):
                pass
    # Without a client: short-lived clients; a missing resource is an HTTP error.
    async with open_archive(HttpRangeSource(f"{base}/files/{name}")) as archive:
        dest = tmp_path / "from-http"
        await archive.extract_all(dest)
    assert tree(dest / "dataset") == tree(dataset)
    with pytest.raises(httpx.HTTPStatusError):
        async with open_archive(HttpRangeSource(f"{base}/files/missing.tar")):
            pass
