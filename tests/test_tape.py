"""Record and play: the public API, determinism, windows and the integrity promise."""

from __future__ import annotations

import io
import os
import tarfile
from contextlib import aclosing
from pathlib import Path

import pytest

import atartape
from atartape import TarEventType
from tests.helpers import write

pytestmark = pytest.mark.anyio


async def full_stream(player: atartape.TapePlayer, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in player.stream(start, end)])


async def test_record_defaults_and_discover(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    assert os.path.isfile(dataset / ".tartape" / "index.db")
    assert tape.entry_count == 10  # root, 5 files, 3 folders, 1 symlink
    found = await atartape.Tape.discover(dataset)
    assert (found.fingerprint, found.total_size, found.file_count) == (
        tape.fingerprint,
        tape.total_size,
        tape.file_count,
    )
    assert isinstance(tape.total_size, int) and isinstance(tape.fingerprint, str)
    assert tape.file_count == 5
    assert tape.name == "dataset"


async def test_commit_returns_fingerprint(dataset: Path) -> None:
    fingerprint = await atartape.TapeRecorder(dataset).commit()
    assert fingerprint == (await atartape.Tape.discover(dataset)).fingerprint
    assert len(fingerprint) == 64


async def test_index_elsewhere_exclude_overwrite(dataset: Path, tmp_path: Path) -> None:
    write(dataset / "skip.tmp", "x")
    write(dataset / ".git" / "HEAD", "ref")
    index = tmp_path / "elsewhere" / "ds.db"
    tape = await atartape.record(dataset, index_path=index, exclude=["*.tmp", ".git"])
    names = [e.arc_path async for e in tape.entries()]
    assert "dataset/skip.tmp" not in names
    assert not any(".git" in n for n in names)
    with pytest.raises(atartape.TapeExistsError, match="already exists"):
        await atartape.record(dataset, index_path=index)
    again = await atartape.record(
        dataset, index_path=index, exclude=["*.tmp", ".git"], overwrite=True
    )
    assert again.fingerprint == tape.fingerprint
    opened = await atartape.Tape.open(index)
    assert opened.fingerprint == tape.fingerprint
    assert not (dataset / ".tartape").exists()


async def test_stream_is_a_tar_that_tarfile_reads(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    data = await full_stream(atartape.TapePlayer(tape, source_root=dataset))
    assert len(data) == tape.total_size
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert list(members) == sorted(members, key=os.fsencode)
        assert ".tartape" not in " ".join(members)
        assert members["dataset/link"].issym() and members["dataset/link"].linkname == "a.txt"
        assert members["dataset/empty_dir"].isdir()
        assert members["dataset/sub/deeper/c.txt"].mode == 0o600
        for name, member in members.items():
            assert member.uid == 0 and member.gid == 0 and member.uname == "" and member.gname == ""
            if member.isfile():
                source = dataset.parent / name
                assert archive.extractfile(member).read() == source.read_bytes()  # type: ignore[union-attr]
                assert member.mtime == int(source.stat().st_mtime)


async def test_events(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset)
    events = [e async for e in player.play()]
    assert events[-1].type is TarEventType.TAPE_COMPLETED
    assert events[-1].type == "tape_completed"
    data = b"".join(e.data for e in events if e.type == TarEventType.FILE_DATA)
    assert data == await full_stream(player)
    ends = {e.entry.arc_path: e for e in events if e.type == "file_end" and e.entry}
    big = ends["dataset/sub/big.bin"]
    import hashlib

    assert big.metadata.md5sum == hashlib.md5((dataset / "sub/big.bin").read_bytes()).hexdigest()
    assert not big.metadata.resumed
    starts = [e for e in events if e.type == "file_start"]
    assert [e.metadata.start_offset for e in starts] == sorted(
        e.metadata.start_offset for e in starts
    )
    for event in events:
        if event.type == "file_data":
            assert event.metadata.end_offset - event.metadata.start_offset == len(event.data)


async def test_resume_mid_file_marks_resumed_without_md5(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset)
    big = await tape.entry("dataset/sub/big.bin")
    events = [e async for e in player.play(start_offset=big.data_offset + 1000)]
    assert events[0].type == "file_start" and events[0].metadata.resumed
    end = next(e for e in events if e.type == "file_end")
    assert end.metadata.resumed and end.metadata.md5sum is None
    full = await full_stream(player)
    assert (
        b"".join(e.data for e in events if e.type == "file_data") == full[big.data_offset + 1000 :]
    )


async def test_windows_match_full_stream(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset, chunk_size=4096, read_ahead=10_000)
    full = await full_stream(player)
    total = tape.total_size
    offsets = sorted(
        {0, 1, 511, 512, 513, 1024, 5000, 300_000, total - 1025, total - 1024, total - 1, total}
    )
    for start in offsets:
        assert await full_stream(player, start) == full[start:]
        for end in offsets:
            if end >= start:
                assert await full_stream(player, start, end) == full[start:end]


async def test_play_window_ending_mid_entry_has_no_file_end(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset)
    big = await tape.entry("dataset/sub/big.bin")
    events = [e async for e in player.play(big.start_offset, big.data_offset + 10)]
    assert next(e.type for e in events) == "file_start"
    assert all(e.type != "file_end" for e in events)
    assert sum(len(e.data) for e in events) == 522


@pytest.mark.parametrize("bad", [-1, 10**15, "5", 1.5, True])
async def test_bad_offsets(dataset: Path, bad: object) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset)
    with pytest.raises(atartape.InvalidOffsetError) as info:
        player.stream(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    with pytest.raises(atartape.InvalidOffsetError, match="before start_offset"):
        player.play(100, 50)


async def test_same_tree_same_bytes(tmp_path: Path, dataset: Path) -> None:
    first = await atartape.record(dataset, index_path=tmp_path / "1.db")
    second = await atartape.record(dataset, index_path=tmp_path / "2.db")
    assert first.fingerprint == second.fingerprint
    one = await full_stream(atartape.TapePlayer(first, source_root=dataset))
    two = await full_stream(atartape.TapePlayer(second, source_root=dataset))
    assert one == two


async def test_arcname_overrides_root(dataset: Path) -> None:
    tape = await atartape.record(dataset, arcname="renamed")
    names = [e.arc_path async for e in tape.entries()]
    assert names[0] == "renamed" and all(n.startswith("renamed") for n in names)


async def test_non_utf8_name_keeps_its_bytes(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    raw = os.path.join(os.fsencode(root), b"caf\xe9.txt")
    with open(raw, "wb") as handle:
        handle.write(b"latin-1 name")
    tape = await atartape.record(root)
    data = await full_stream(atartape.TapePlayer(tape))
    assert b"odd/caf\xe9.txt\x00" in data
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        member = tf.getmember(os.fsdecode(b"odd/caf\xe9.txt"))
        assert tf.extractfile(member).read() == b"latin-1 name"  # type: ignore[union-attr]


async def test_special_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "special"
    write(root / "f.txt", "f")
    os.mkfifo(root / "pipe")
    tape = await atartape.record(root)
    assert [e.arc_path async for e in tape.entries()] == ["special", "special/f.txt"]


async def test_path_constraints_list_every_offender(tmp_path: Path) -> None:
    root = tmp_path / "long"
    write(root / ("a" * 101), "x")
    write(root / ("b" * 99) / ("c" * 99) / ("d" * 60), "x")
    (root / "badlink").symlink_to("t" * 120)
    with pytest.raises(atartape.PathConstraintError) as info:
        await atartape.record(root)
    bad = {path for path, _ in info.value.violations}
    assert bad == {"long/" + "a" * 101, f"long/{'b' * 99}/{'c' * 99}/{'d' * 60}", "long/badlink"}
    assert "a" * 20 in str(info.value) and "symlink target" in str(info.value)
    assert not (root / ".tartape" / "index.db").exists()


async def test_missing_folder_and_tape(tmp_path: Path) -> None:
    with pytest.raises(atartape.SourceNotFoundError, match="nope"):
        await atartape.record(tmp_path / "nope")
    with pytest.raises(atartape.TapeNotFoundError, match="no tape"):
        await atartape.Tape.discover(tmp_path)
    with pytest.raises(atartape.TapeNotFoundError):
        await atartape.Tape.open(tmp_path / "missing.db")
    write(tmp_path / "junk.db", "not sqlite at all" * 100)
    with pytest.raises(atartape.TapeFormatError):
        await atartape.Tape.open(tmp_path / "junk.db")


async def test_errors_share_one_base() -> None:
    for error in (
        atartape.TarIntegrityError,
        atartape.InvalidOffsetError,
        atartape.PathConstraintError,
        atartape.TapeNotFoundError,
        atartape.EntryNotFoundError,
    ):
        assert issubclass(error, atartape.TarTapeError)


async def test_playing_without_source(dataset: Path, tmp_path: Path) -> None:
    tape = await atartape.record(dataset, index_path=tmp_path / "x.db")
    player = atartape.TapePlayer(tape, source_root=tmp_path / "gone")
    with pytest.raises(atartape.SourceNotFoundError, match="gone"):
        await full_stream(player)


async def test_break_closes_files(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    player = atartape.TapePlayer(tape, source_root=dataset, chunk_size=1024, read_ahead=2048)
    before = set(os.listdir("/proc/self/fd"))
    async with aclosing(player.stream()) as stream:
        async for chunk in stream:
            if len(chunk) > 0 and len(os.listdir("/proc/self/fd")) > len(before):
                break
    leftover = {
        fd
        for fd in set(os.listdir("/proc/self/fd")) - before
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    targets = {os.readlink(f"/proc/self/fd/{fd}") for fd in leftover}
    assert not any(str(dataset) in t for t in targets)


async def test_one_shot_tartape(dataset: Path, tmp_path: Path) -> None:
    recorded = await atartape.record(dataset)
    player_bytes = await full_stream(atartape.TapePlayer(recorded))
    extra = write(tmp_path / "single.txt", "single")
    tape = atartape.TarTape()
    tape.add_folder(dataset)
    tape.add_file(extra, arcname="notes/single.txt")
    tape.add_bytes("notes/readme.txt", b"in memory", mtime=1_700_000_000)
    events = [e async for e in tape.stream()]
    assert events[-1].type == TarEventType.TAPE_COMPLETED
    data = b"".join(e.data for e in events if e.type == TarEventType.FILE_DATA)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.extractfile("notes/readme.txt").read() == b"in memory"  # type: ignore[union-attr]
        assert archive.getmember("notes/readme.txt").mtime == 1_700_000_000
        assert archive.extractfile("notes/single.txt").read() == b"single"  # type: ignore[union-attr]
    # The folder comes first ("dataset" < "notes"), laid out exactly as the recorded tape.
    assert data[: len(player_bytes) - 1024] == player_bytes[:-1024]


async def test_one_shot_refuses_duplicates_and_bad_paths(dataset: Path) -> None:
    tape = atartape.TarTape()
    tape.add_bytes("x.txt", b"1")
    tape.add_bytes("x.txt", b"2")
    with pytest.raises(atartape.TarTapeError, match="added twice"):
        [e async for e in tape.stream()]
    with pytest.raises(atartape.PathConstraintError):
        tape.add_bytes("../escape.txt", b"")
    missing = atartape.TarTape()
    missing.add_folder(dataset / "nope")
    with pytest.raises(atartape.SourceNotFoundError):
        [e async for e in missing.stream()]


async def test_md5_of_files_larger_than_a_chunk(dataset: Path) -> None:
    import hashlib

    content = os.urandom(3 * 1024 * 1024 + 77)  # four chunks: hashed while the next are read
    write(dataset / "huge.bin", content)
    tape = await atartape.record(dataset)
    for chunk_size in (None, 64 * 1024):
        kwargs = (
            {} if chunk_size is None else {"chunk_size": chunk_size, "read_ahead": 2 * chunk_size}
        )
        player = atartape.TapePlayer(tape, **kwargs)  # type: ignore[arg-type]
        ends = {
            e.entry.arc_path: e.metadata.md5sum
            async for e in player.play()
            if e.type == "file_end" and e.entry is not None
        }
        assert ends["dataset/huge.bin"] == hashlib.md5(content).hexdigest()
