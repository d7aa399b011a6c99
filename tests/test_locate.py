"""Locate: where a file's bytes lie in the tape and in its volumes (pure, and via the index)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import atartape
from atartape.format.header import EntryKind
from atartape.format.layout import Entry
from atartape.format.windows import Fragment, Location, locate_entry, range_header

pytestmark = pytest.mark.anyio


async def full_stream(player: atartape.TapePlayer) -> bytes:
    return b"".join([chunk async for chunk in player.stream()])


def an_entry(start: int, size: int) -> Entry:
    return Entry("t/f", EntryKind.FILE, size, 0o644, 0, start)


# ------------------------------------------------------------------------ pure


def test_range_header() -> None:
    assert range_header(512, 100) == {"Range": "bytes=512-611"}
    assert range_header(0, 1) == {"Range": "bytes=0-0"}
    with pytest.raises(ValueError, match="no HTTP Range"):
        range_header(10, 0)


def test_whole_tape_location_is_one_fragment_in_volume_zero() -> None:
    where = locate_entry(an_entry(1024, 1000))
    assert (where.start_offset, where.data_offset, where.size) == (1024, 1536, 1000)
    assert where.end_offset == 1024 + 512 + 1024
    assert where.volume_size is None
    assert where.range_header == {"Range": "bytes=1536-2535"}
    assert where.fragments == [Fragment(0, 1536, 1000)]
    assert where.fragments[0].range_header == where.range_header


def test_fragments_across_volumes() -> None:
    where = locate_entry(an_entry(1024, 3000), volume_size=1000)
    # content [1536, 4536): volume 1 from 536, volumes 2 and 3 whole, volume 4 up to 536
    assert where.fragments == [
        Fragment(1, 536, 464),
        Fragment(2, 0, 1000),
        Fragment(3, 0, 1000),
        Fragment(4, 0, 536),
    ]
    assert where.volume_indexes == [1, 2, 3, 4]
    assert where.fragments[0].range_header == {"Range": "bytes=536-999"}
    assert where.fragments[-1].end_in_volume == 536
    assert where.range_header == {"Range": "bytes=1536-4535"}
    assert locate_entry(an_entry(0, 10), "1KiB").fragments == [Fragment(0, 512, 10)]
    with pytest.raises(ValueError, match="volume size"):
        locate_entry(an_entry(0, 10), "1 KiB please")


def test_empty_content_has_nothing_to_fetch() -> None:
    for volume_size in (None, 512):
        where = locate_entry(an_entry(2048, 0), volume_size)
        assert where.fragments == [] and where.range_header is None
        assert where.data_offset == 2560 and where.end_offset == 2560
    folder = Entry("t/d", EntryKind.DIRECTORY, 0, 0o755, 0, 0)
    assert locate_entry(folder).fragments == []


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.integers(1, 10**6))
def test_fragments_tile_the_content(block: int, size: int, volume_size: int) -> None:
    size = min(size, volume_size * 300)  # keep the number of fragments small
    entry = an_entry(block * 512, size)
    where = locate_entry(entry, volume_size)
    assert sum(f.length for f in where.fragments) == size
    at = entry.data_offset
    for fragment in where.fragments:
        assert fragment.volume_index * volume_size + fragment.offset_in_volume == at
        assert fragment.length > 0 and fragment.end_in_volume <= volume_size
        at += fragment.length
    assert at == entry.data_offset + size
    indexes = where.volume_indexes
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes))) if indexes else size == 0


def test_location_is_hashable_and_frozen() -> None:
    where = locate_entry(an_entry(0, 5), 1000)
    assert hash(where) == hash(locate_entry(an_entry(0, 5), 1000))
    with pytest.raises(AttributeError):
        where.size = 3  # type: ignore[misc]


# ------------------------------------------------------------------------ via the tape


async def test_locate_every_file_in_its_volumes(dataset: Path) -> None:
    tape = await atartape.record(dataset, checksum="sha256")
    player = atartape.TapePlayer(tape)
    full = await full_stream(player)
    size = 100_000
    volumes = [full[i : i + size] for i in range(0, len(full), size)]
    async for entry in tape.entries():
        if entry.kind is not EntryKind.FILE:
            continue
        content = (dataset.parent / entry.arc_path).read_bytes()
        whole = await tape.locate(entry.arc_path)
        assert isinstance(whole, Location)
        assert full[whole.data_offset : whole.data_offset + whole.size] == content
        assert (whole.start_offset, whole.end_offset) == (entry.start_offset, entry.end_offset)
        assert whole.checksum == entry.checksum and whole.checksum_algorithm == "sha256"
        cut = await tape.locate(entry.arc_path, volume_size=size)
        pieces = [
            volumes[f.volume_index][f.offset_in_volume : f.end_in_volume] for f in cut.fragments
        ]
        assert b"".join(pieces) == content
        if whole.size:
            first, last = map(int, whole.range_header["Range"][6:].split("-"))  # type: ignore[index]
            assert full[first : last + 1] == content
        else:
            assert whole.range_header is None and cut.fragments == []
    big = await tape.locate("dataset/sub/big.bin", "64KiB")
    assert len(big.fragments) > 10 and big.volume_size == 65536


async def test_unknown_path_and_bad_size(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    with pytest.raises(atartape.EntryNotFoundError, match=r"nope\.txt") as info:
        await tape.locate("dataset/nope.txt")
    assert isinstance(info.value, KeyError) and isinstance(info.value, atartape.TarTapeError)
    with pytest.raises(ValueError, match="volume size"):
        await tape.locate("dataset/a.txt", volume_size=0)
    where = await tape.locate("dataset/a.txt")
    assert where.checksum is None and where.checksum_algorithm is None


async def test_locate_offline(dataset: Path, tmp_path: Path) -> None:
    index = tmp_path / "offline.db"
    tape = await atartape.record(dataset, index_path=index)
    online = await tape.locate("dataset/sub/deeper/c.txt", "1KiB")
    os.rename(dataset, tmp_path / "elsewhere")
    offline = await atartape.Tape.open(index)
    assert await offline.locate("dataset/sub/deeper/c.txt", "1KiB") == online
    assert online.mode == 0o600
