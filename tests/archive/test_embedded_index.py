"""The embedded index: recorded and one-shot tapes end with a CSV listing every entry."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

import atartape
from atartape.archive import open_archive
from atartape.format.embedded import IndexRow, index_name, parse_index_csv
from atartape.format.header import BLOCK_SIZE
from tests.helpers import MemorySource, tape_bytes, write

pytestmark = pytest.mark.anyio


async def events_bytes(player: atartape.TapePlayer, start: int = 0) -> bytes:
    return b"".join([e.data async for e in player.play(start) if e.type == "file_data"])


async def test_recorded_tape_ends_with_its_index(dataset: Path, tmp_path: Path) -> None:
    plain, plain_bytes = await tape_bytes(dataset, tmp_path)
    tape, data = await tape_bytes(dataset, tmp_path, embed_index=True)
    entries = [e async for e in tape.entries()]
    name = index_name(tape.fingerprint)
    # The fingerprint and counts cover the real entries; total_size includes the index.
    assert tape.fingerprint == plain.fingerprint and tape.entry_count == plain.entry_count
    assert len(data) == tape.total_size > plain.total_size
    assert data[: plain.total_size - 1024] == plain_bytes[:-1024]
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        assert members[-1].name == name == f".tarindex_{tape.fingerprint[:16]}.csv"
        assert [m.name for m in members[:-1]] == [e.arc_path for e in entries]
        csv = tf.extractfile(members[-1]).read()  # type: ignore[union-attr]
        assert members[-1].offset == plain.total_size - 1024
        assert members[-1].mtime == max(e.mtime for e in entries)
    assert parse_index_csv(csv) == [
        IndexRow(e.arc_path, e.size, e.start_offset // BLOCK_SIZE, e.span // BLOCK_SIZE)
        for e in entries
    ]
    # GNU tar agrees.
    path = write(tmp_path / "t.tar", data)
    listing = subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True).stdout
    assert listing.decode().splitlines()[-1] == name
    shown = subprocess.run(["tar", "-xOf", str(path), name], check=True, capture_output=True)
    assert shown.stdout == csv


async def test_windows_and_resume_across_the_index(dataset: Path, tmp_path: Path) -> None:
    tape, data = await tape_bytes(dataset, tmp_path, embed_index=True)
    player = atartape.TapePlayer(tape, source_root=dataset, chunk_size=4096, read_ahead=8192)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        index_at = tf.getmembers()[-1].offset
    total = tape.total_size
    offsets = sorted({0, index_at - 1, index_at, index_at + 1, index_at + 600, total - 1025, total})
    for start in offsets:
        assert b"".join([c async for c in player.stream(start)]) == data[start:], start
        for end in offsets:
            if end >= start:
                window = b"".join([c async for c in player.stream(start, end)])
                assert window == data[start:end], (start, end)
    assert await events_bytes(player) == data
    assert await events_bytes(player, index_at + 10) == data[index_at + 10 :]
    events = [e async for e in player.play()]
    last_end = [e for e in events if e.type == "file_end"][-1]
    assert last_end.entry is not None and last_end.entry.arc_path == index_name(tape.fingerprint)
    csv = data[index_at + 512 : index_at + 512 + last_end.entry.size]
    assert last_end.metadata.md5sum == hashlib.md5(csv).hexdigest()


async def test_tartape_embeds_the_same_index(dataset: Path, tmp_path: Path) -> None:
    _, recorded = await tape_bytes(dataset, tmp_path, embed_index=True)
    one_shot = atartape.TarTape(embed_index=True)
    one_shot.add_folder(dataset)
    data = b"".join([e.data async for e in one_shot.stream() if e.type == "file_data"])
    assert data == recorded

    mixed = atartape.TarTape(embed_index=True)
    mixed.add_bytes("notes/a,b.txt", b"comma", mtime=1_700_000_000)
    mixed.add_bytes('notes/quote"d\nname.txt', b"odd", mtime=1_700_000_000)
    mixed.add_file(dataset / "a.txt", arcname="notes/copied.txt")
    data = b"".join([e.data async for e in mixed.stream() if e.type == "file_data"])
    async with open_archive(MemorySource(data)) as archive:
        index = await archive.embedded_index()
        assert index is not None
        assert [row.name for row in index] == [
            "notes/a,b.txt",
            "notes/copied.txt",
            'notes/quote"d\nname.txt',
        ]
        assert await archive.read('notes/quote"d\nname.txt') == b"odd"
        assert await archive.read("notes/a,b.txt") == b"comma"


async def test_extract_then_record_again_gives_the_same_tape(dataset: Path, tmp_path: Path) -> None:
    tape, data = await tape_bytes(dataset, tmp_path, embed_index=True)
    dest = tmp_path / "restored"
    async with open_archive(write(tmp_path / "t.tar", data)) as archive:
        await archive.extract_all(dest)
    # The index lands beside the folder, not in it: the folder records to the same tape.
    assert (dest / index_name(tape.fingerprint)).is_file()
    again = await atartape.record(dest / "dataset", index_path=tmp_path / "again.db")
    assert again.fingerprint == tape.fingerprint


async def test_index_without_entries_and_lookup_by_index(tmp_path: Path) -> None:
    empty = atartape.TarTape(embed_index=True)
    data = b"".join([e.data async for e in empty.stream() if e.type == "file_data"])
    async with open_archive(MemorySource(data)) as archive:
        assert await archive.embedded_index() == []
        with pytest.raises(atartape.EntryNotFoundError, match="not in the archive"):
            await archive.read("anything")
    async with open_archive(MemorySource(data), trust_index=True) as archive:
        assert await archive.embedded_index() == []
        with pytest.raises(atartape.EntryNotFoundError, match="per its index"):
            await archive.read("anything")
