"""Named layouts kept in the index, volume checksums kept as volumes complete, verify_volume.

Ports of tartape 3.0.3's layout, verify_volume and volume-checksum tests (its notes, sections
8.9 to 8.12), in atartape's terms, and what atartape adds: tags that spare anyone the "64KiB, not
64KB" question, identity untouched by layouts, writes pinned to the recording.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import atartape
from atartape.format.units import parse_size
from tests.helpers import write

pytestmark = pytest.mark.anyio


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """doc.txt of 1024 bytes starts at 512: in 2048-byte volumes it straddles volumes 0-1."""
    root = tmp_path / "data"
    write(root / "doc.txt", bytes(range(256)) * 4)
    write(root / "pic.bin", os.urandom(20_000))
    write(root / "zz" / "tail.txt", "the end\n")
    return root


async def volume_bytes(volume: atartape.Volume) -> bytes:
    return b"".join([chunk async for chunk in volume])


async def full(tape: atartape.Tape) -> bytes:
    return b"".join([chunk async for chunk in atartape.TapePlayer(tape).chunks()])


# ------------------------------------------------------------------ registering and finding


async def test_multi_layout_registration_and_retrieval(files: Path) -> None:
    tape = await atartape.record(files)
    s3 = await tape.register_layout(1024, tag="s3_plan")
    tg = await tape.register_layout(2048, tag="tg_plan")
    assert len(tape.layouts) == 2
    assert tape.get_layout("s3_plan") == s3 and tape.get_layout("tg_plan") == tg
    assert tape.get_layout(1024) == s3 and tape.get_layout(2048) == tg
    assert s3.registered and not s3.is_virtual and s3.count == -(-tape.total_size // 1024)
    assert s3.names[0] == "data.tar.0000"
    # Kept in the index: another opening sees them, oldest first.
    again = await atartape.Tape.open(tape.index_path)
    assert [layout.tag for layout in again.layouts] == ["s3_plan", "tg_plan"]


async def test_layouts_are_no_part_of_the_recording(files: Path) -> None:
    tape = await atartape.record(files)
    before = await full(tape)
    await tape.register_layout("4KiB", tag="parts", is_default=True)
    again = await atartape.Tape.open(tape.index_path)
    assert again.identity == tape.identity and again.fingerprint == tape.fingerprint
    assert await full(again) == before  # a player planned before still plays, unchanged
    report = await atartape.TapePlayer(again).verify()
    assert report


async def test_ambiguous_default_and_unknown_tags(files: Path) -> None:
    tape = await atartape.record(files)
    monolithic = tape.default_layout  # no layout: the tape as one volume
    assert monolithic.is_virtual and monolithic.count == 1 and monolithic.tag == "monolithic"
    await tape.register_layout(1024, tag="a")
    assert tape.default_layout.tag == "a"  # the only one
    await tape.register_layout(2048, tag="b")
    with pytest.raises(atartape.AmbiguousLayoutError, match="none is the default"):
        _ = tape.default_layout
    with pytest.raises(atartape.LayoutNotFoundError, match="FOO_BAR"):
        tape.get_layout("FOO_BAR")
    with pytest.raises(KeyError):  # tartape's code catches KeyError
        tape.get_layout("nope")


async def test_default_layout_resolution(files: Path) -> None:
    tape = await atartape.record(files)
    await tape.register_layout(1024, tag="small")
    await tape.register_layout(2048, tag="default_one", is_default=True)
    await tape.register_layout(4096, tag="big")
    assert tape.default_layout.tag == "default_one"
    where = await tape.locate("data/doc.txt", tape.default_layout)
    assert where.layout_tag == "default_one" and where.volume_size == 2048
    # Registering another default moves the mark, in the index too.
    await tape.register_layout(4096, tag="big", is_default=True)
    assert tape.default_layout.tag == "big"
    assert (await atartape.Tape.open(tape.index_path)).default_layout.tag == "big"


async def test_tags_are_the_size_written_exactly(files: Path) -> None:
    tape = await atartape.record(files)
    layout = await tape.register_layout("100MiB")
    assert layout.tag == "100MiB" and layout.volume_size == 100 * 2**20
    assert tape.get_layout("100MiB") == layout
    assert tape.get_layout(100 * 2**20) == layout
    assert tape.get_layout("100mib") == layout  # a size, matching the layout's
    gib = await tape.register_layout(2**30)
    assert gib.tag == "1GiB"
    decimal = await tape.register_layout("1GB")
    assert decimal.tag == "1GB" and decimal.volume_size == 10**9


async def test_a_size_read_the_other_way_is_refused(files: Path) -> None:
    """ "64KB" is 64 000 bytes here; beside a layout of 64 KiB volumes it is refused, naming the
    layout, instead of silently cutting volumes of another size."""
    tape = await atartape.record(files)
    await tape.register_layout("64KiB", tag="s3")
    with pytest.raises(atartape.AmbiguousLayoutError, match=r"'s3'.*65536") as info:
        atartape.TapePlayer(tape).volumes("64KB")
    assert "64000" in str(info.value)
    with pytest.raises(atartape.AmbiguousLayoutError):
        await tape.locate("data/doc.txt", "64kb")
    # The int means what it says; the tag and the exact size mean the layout.
    plain = tape.get_layout(64_000)
    assert plain.volume_size == 64_000 and plain.is_virtual
    assert tape.get_layout("64KiB").tag == tape.get_layout("s3").tag == "s3"
    # A tag that looks like a size is found first: no unit to remember.
    await tape.register_layout(65536, tag="64KB")
    assert tape.get_layout("64KB").volume_size == 65536


async def test_registration_errors(files: Path) -> None:
    tape = await atartape.record(files)
    with pytest.raises(ValueError, match="name_template"):
        await tape.register_layout(1024, name_template="{nope}")
    with pytest.raises(ValueError, match="volume size"):
        await tape.register_layout("12 bananas")
    with pytest.raises(ValueError, match="tag"):
        await tape.register_layout(1024, tag="  ")
    assert tape.layouts == ()
    # tartape's name fields work too.
    named = await tape.register_layout(
        1024, tag="tt", name_template="{name}_{fingerprint:.8}.tar.{pindex}"
    )
    assert named.names[0] == f"data_{tape.fingerprint[:8]}.tar.001"
    # A new recording: a layout planned with the old one is refused, nothing written.
    write(files / "new.txt", "new")
    await atartape.record(files, overwrite=True)
    with pytest.raises(atartape.TapeChangedError):
        await tape.register_layout(2048, tag="late")
    assert (await atartape.Tape.open(tape.index_path)).layouts == ()


async def test_standalone_catalog_and_locate(files: Path, tmp_path: Path) -> None:
    """Offline (the source gone): register a layout and locate doc.txt across volumes."""
    index = tmp_path / "catalog.db"
    await atartape.record(files, index_path=index)
    await anyio.to_thread.run_sync(shutil.rmtree, files)
    tape = await atartape.Tape.open(index)
    assert tape.file_count == 3
    small = await tape.register_layout(2048, tag="small_parts", is_default=True)
    assert small.count >= 3
    where = await tape.locate("data/doc.txt", "small_parts")
    assert [(f.volume_index, f.offset_in_volume, f.length) for f in where.fragments] == [
        (0, 1024, 1024)
    ]
    big = await tape.locate("data/pic.bin", "small_parts")
    assert len(big.fragments) > 1 and sum(f.length for f in big.fragments) == 20_000
    assert (await tape.locate("data/pic.bin", layout="small_parts")) == big
    single = await tape.locate("data/pic.bin", 32768)
    assert len(single.fragments) == 1 and single.layout_tag is None
    assert tape.get_layout(2048).tag == "small_parts"


# ------------------------------------------------------------------ volume checksums


async def test_volumes_of_a_layout_keep_their_md5(files: Path) -> None:
    tape = await atartape.record(files)
    layout = await tape.register_layout(2048, tag="s3_parts")
    player = atartape.TapePlayer(tape)
    volumes = player.volumes("s3_parts")
    assert [v.layout_tag for v in volumes] == ["s3_parts"] * layout.count
    assert volumes[0].md5 is None and tape.get_layout("s3_parts").checksum(0) is None
    first = await volume_bytes(volumes[0])
    assert len(first) == 2048
    assert volumes[0].md5 == hashlib.md5(first).hexdigest()
    assert tape.get_layout("s3_parts").checksum(0) == volumes[0].md5
    stored = (await atartape.Tape.open(tape.index_path)).get_layout("s3_parts")
    assert stored.volume(0).checksum == volumes[0].md5
    assert stored.volume(0).checksum_algorithm == "md5" and stored.checksum(1) is None
    # A volume of a size with no layout keeps nothing.
    loose = player.volumes(4096)[0]
    await volume_bytes(loose)
    assert loose.md5 is not None and loose.layout_tag is None


async def test_non_linear_reads_compute_nothing_then_checksum_does(files: Path) -> None:
    tape = await atartape.record(files)
    await tape.register_layout(4096, tag="t")
    volume = atartape.TapePlayer(tape).volume(1, layout="t")
    async with volume:
        await volume.read(100)
        await volume.seek(500)
        rest = await volume.read()
    assert len(rest) == volume.size - 500 and volume.md5 is None
    assert tape.get_layout("t").checksum(1) is None
    digest = await volume.checksum("md5")  # tartape's compute_checksum: one full read
    assert volume.md5 == digest and tape.get_layout("t").checksum(1) == digest


async def test_concurrent_volumes_keep_every_md5(tmp_path: Path) -> None:
    root = tmp_path / "big"
    write(root / "random.bin", os.urandom(64 * 1024))
    tape = await atartape.record(root)
    await tape.register_layout("8KiB", tag="par")
    volumes = atartape.TapePlayer(tape).volumes(layout="par")
    got: dict[int, bytes] = {}

    async def produce(volume: atartape.Volume) -> None:
        got[volume.index] = await volume_bytes(volume)

    async with anyio.create_task_group() as group:
        for volume in volumes:
            group.start_soon(produce, volume)
    stored = await atartape.Tape.open(tape.index_path)
    for volume in volumes:
        assert (
            stored.get_layout("par").checksum(volume.index)
            == hashlib.md5(got[volume.index]).hexdigest()
        )
    assert await tape.reload_layouts() == stored.layouts


# ------------------------------------------------------------------ verify_volume


async def test_verify_volume(files: Path, tmp_path: Path) -> None:
    tape = await atartape.record(files)
    await tape.register_layout(4096, tag="parts")
    out = tmp_path / "out"
    out.mkdir()
    for volume in atartape.TapePlayer(tape).volumes("parts"):
        (out / volume.name).write_bytes(await volume_bytes(volume))
    second = out / "data.tar.0001"
    assert await atartape.verify_volume(tape, second, 1, tag="parts")
    assert await atartape.verify_volume(tape, second)  # by its name, in the default layout
    assert await atartape.verify_volume(tape.index_path, second, tag="parts")  # by path
    assert await tape.verify_volume(second)
    assert not await atartape.verify_volume(tape, second, 2)  # another volume's bytes
    assert not await atartape.verify_volume(tape, out / "missing.tar", 1)
    with pytest.raises(atartape.VolumeNotFoundError, match="volume index 7"):
        await atartape.verify_volume(tape, second, 7)
    with pytest.raises(atartape.VolumeNotFoundError, match="pass volume_index"):
        await atartape.verify_volume(tape, out / "other-name.bin")
    data = bytearray(second.read_bytes())
    data[100] ^= 1
    second.write_bytes(bytes(data))
    assert not await atartape.verify_volume(tape, second)
    # No checksum kept (a virtual layout): not verified.
    assert not await atartape.verify_volume(tape, out / "data.tar.0000", 0, tag=8192)


async def test_verify_volume_with_a_stored_md5(files: Path, tmp_path: Path) -> None:
    """tartape's test: a checksum written into the index, a file that matches it, then not."""
    tape = await atartape.record(files)
    await tape.register_layout(2048, tag="m")
    payload = b"some volume data"
    assert await tape.keep_volume_checksum(
        tape.get_layout("m"), 0, "md5", hashlib.md5(payload).hexdigest()
    )
    part = write(tmp_path / "part0", payload)
    # Its size differs from the volume's: a quick False, before any hashing.
    assert not await atartape.verify_volume(tape, part, 0, tag="m")
    layout = tape.get_layout("m")
    good = write(tmp_path / "good", (await full(tape))[:2048])
    assert not await atartape.verify_volume(tape, good, 0, tag=layout)  # the md5 is another's
    real = hashlib.md5(good.read_bytes()).hexdigest()
    assert await tape.keep_volume_checksum(layout, 0, "md5", real)
    assert await atartape.verify_volume(tape, good, 0, tag=layout)


# ------------------------------------------------------------------ read-only places


@pytest.fixture
def make_read_only() -> Iterator[Callable[[Path], None]]:
    """Bind-mounts a folder read-only over itself (root cannot write there either)."""
    mounted: list[Path] = []

    def make(folder: Path) -> None:
        done = subprocess.run(["mount", "-o", "bind,ro", str(folder), str(folder)], check=False)
        if done.returncode != 0:
            pytest.skip("cannot make a read-only bind mount here")
        mounted.append(folder)

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


async def test_recording_a_read_only_folder(
    tmp_path: Path, make_read_only: Callable[[Path], None]
) -> None:
    folder = tmp_path / "folder"
    write(folder / "a.txt", "a" * 3000)
    write(folder / "sub" / "b.txt", "b")
    await anyio.to_thread.run_sync(make_read_only, folder)
    with pytest.raises(PermissionError, match=r"index_path= \(--index\)"):
        await atartape.record(folder)
    elsewhere = tmp_path / "custom_location" / "backup.db"
    tape = await atartape.record(folder, index_path=elsewhere)
    assert tape.index_path == str(elsewhere) and elsewhere.is_file()
    assert sorted(os.listdir(folder)) == ["a.txt", "sub"]  # nothing written into it
    data = await full(tape)
    assert len(data) == tape.total_size


async def test_an_index_on_a_read_only_mount(
    files: Path, tmp_path: Path, make_read_only: Callable[[Path], None]
) -> None:
    place = tmp_path / "ro"
    index = place / "index.db"
    await atartape.record(files, index_path=index)
    await anyio.to_thread.run_sync(make_read_only, place)
    tape = await atartape.Tape.open(index, source_root=files)
    with pytest.raises(atartape.ReadOnlyIndexError, match="read-only") as info:
        await tape.register_layout(2048)
    assert isinstance(info.value, PermissionError)
    # Volumes of a size still play; their checksums are simply not kept.
    volume = atartape.TapePlayer(tape).volume(0, 2048)
    assert len(await volume_bytes(volume)) == 2048 and volume.md5 is not None
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "layouts" not in tables
    assert sorted(os.listdir(place)) == ["index.db"]


def test_parse_size_is_atartape_s() -> None:
    """The size rules layouts build on: decimal and binary, never a bare K."""
    assert parse_size("64KiB") == 65536 and parse_size("64KB") == 64000
    with pytest.raises(ValueError, match="ambiguous"):
        parse_size("64K")
