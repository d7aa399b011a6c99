"""The index is input: an edited index never reaches the stream (issue 20, item 2).

An index is a file, by default inside the served folder: whoever can write there can edit it
with sqlite3. Each edit below is one an attacker (or an accident) makes; for each, a whole play
and every window over the edited row stop before any byte of the edited entry goes out, and the
command line says so in one line with a non-zero status.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import atartape
from atartape._engine import index as _index
from atartape.format import paths
from atartape.format.layout import BLOCK_ROWS, entry_values
from tests.helpers import write
from tests.synthetic import write_synthetic_index

pytestmark = pytest.mark.anyio

SECRET = b"the outside key\n"
MANY = BLOCK_ROWS + 100  # enough entries that the edited row lies in the second block


def make_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A folder whose entries fill more than one block, and a file outside it (``key.txt``)
    with the size and mtime of the folder's ``zz.txt`` (``stat`` and ``touch`` forge both)."""
    root = tmp_path / "ds"
    write(root / "a.txt", "hello\n")
    for i in range(MANY):
        write(root / "many" / f"f{i:05d}", b"")
    inside = write(root / "zz.txt", b"x" * len(SECRET))
    write(root / "zzz.txt", "after\n")
    outside = write(tmp_path / "outside" / "key.txt", SECRET)
    st = inside.stat()
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    return root, outside


def sql(index: str | Path, statement: str, *args: object) -> None:
    with sqlite3.connect(index) as conn:
        conn.execute(statement, args)
    conn.close()


def edit_source(index: str, row: atartape.Entry, root: Path) -> None:
    sql(
        index,
        "UPDATE entries SET source = ? WHERE start_offset = ?",
        b"../outside/key.txt",
        row.start_offset,
    )


def edit_name(index: str, row: atartape.Entry, root: Path) -> None:
    """A name that climbs out of the extraction folder, the content still found (its source)."""
    sql(
        index,
        "UPDATE entries SET arc_path = ?, source = ? WHERE start_offset = ?",
        b"ds/../../evil",
        b"zz.txt",
        row.start_offset,
    )


def edit_delete(index: str, row: atartape.Entry, root: Path) -> None:
    """The row goes, the later ones move up to close the gap, the total follows."""
    sql(index, "DELETE FROM entries WHERE start_offset = ?", row.start_offset)
    sql(
        index,
        "UPDATE entries SET start_offset = start_offset - ? WHERE start_offset > ?",
        row.span,
        row.start_offset,
    )
    sql(index, "UPDATE meta SET value = value - ? WHERE key = 'total_size'", row.span)


def edit_mode(index: str, row: atartape.Entry, root: Path) -> None:
    sql(index, "UPDATE entries SET mode = ? WHERE start_offset = ?", 0o4777, row.start_offset)


def edit_mtime(index: str, row: atartape.Entry, root: Path) -> None:
    """Another mtime, and the file touched to it: only the identity can tell."""
    later = row.mtime_ns + 7 * 10**9
    sql(
        index,
        "UPDATE entries SET mtime = ?, mtime_ns = ? WHERE start_offset = ?",
        later // 10**9,
        later,
        row.start_offset,
    )
    os.utime(root / "zz.txt", ns=(later, later))


EDITS: dict[str, Callable[[str, atartape.Entry, Path], None]] = {
    "source": edit_source,
    "name": edit_name,
    "delete": edit_delete,
    "mode": edit_mode,
    "mtime": edit_mtime,
}


async def recorded(tmp_path: Path) -> tuple[Path, atartape.Tape, bytes, atartape.Entry]:
    root, _ = await anyio.to_thread.run_sync(make_folder, tmp_path)
    tape = await atartape.record(root)
    true = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    edited = await tape.entry("ds/zz.txt")
    assert edited.start_offset // 512 > BLOCK_ROWS  # in the second block
    return root, tape, true, edited


async def received_of(stream: Any) -> tuple[bytes, BaseException | None]:
    got = bytearray()
    try:
        async for chunk in stream:
            got += chunk
    except atartape.TarTapeError as exc:
        return bytes(got), exc
    return bytes(got), None


@pytest.mark.parametrize("edit", list(EDITS))
async def test_an_edited_index_never_reaches_the_stream(tmp_path: Path, edit: str) -> None:
    root, tape, true, row = await recorded(tmp_path)
    await anyio.to_thread.run_sync(EDITS[edit], tape.index_path, row, root)
    for held in (tape, await atartape.Tape.open(tape.index_path)):  # planned before and after
        player = atartape.TapePlayer(held)
        for offset in (
            0,
            row.start_offset - 512,
            row.start_offset,
            row.start_offset + 1,
            row.data_offset,
        ):
            got, error = await received_of(player.chunks(offset))
            assert isinstance(error, atartape.TapeFormatError), (edit, offset, error)
            assert got == true[offset : offset + len(got)]
            assert len(got) <= max(0, row.start_offset - offset)  # no byte of the entry
            assert SECRET not in got


async def test_the_errors_name_the_index_and_the_row(tmp_path: Path) -> None:
    root, tape, _, row = await recorded(tmp_path)
    edit_source(tape.index_path, row, root)
    with pytest.raises(atartape.TapeFormatError) as info:
        async for _ in atartape.TapePlayer(tape).chunks(row.start_offset):
            pass
    text = str(info.value)
    assert tape.index_path in text and f"offset {row.start_offset}" in text
    assert "'../outside/key.txt'" in text and "'..' component" in text


async def test_a_deep_verify_still_checks_the_whole_index(tmp_path: Path) -> None:
    root, tape, _, row = await recorded(tmp_path)
    edit_mode(tape.index_path, row, root)
    with pytest.raises(atartape.TapeFormatError, match="do not give the fingerprint"):
        await atartape.TapePlayer(tape).verify()
    again = await atartape.record(root, overwrite=True)
    assert not (await atartape.TapePlayer(again).verify()).differences
    sql(tape.index_path, "UPDATE row_blocks SET digest = zeroblob(32) WHERE block = 0")
    with pytest.raises(atartape.TapeFormatError, match="identity it records"):
        await atartape.TapePlayer(again).verify()


@pytest.mark.parametrize(
    "name", [b"/etc/passwd", b"ds/../../evil", b"ds/./a", b"ds//a", b"ds/a\0b", b"other/a"]
)
async def test_a_bad_name_is_refused_by_every_reader(dataset: Path, name: bytes) -> None:
    tape = await atartape.record(dataset)
    offset = (await tape.entry("dataset/a.txt")).start_offset
    sql(
        tape.index_path,
        "UPDATE entries SET arc_path = ? WHERE arc_path = ?",
        name,
        b"dataset/a.txt",
    )
    opened = await atartape.Tape.open(tape.index_path)  # the meta alone: cheap, never a pass
    player = atartape.TapePlayer(opened)
    readers = {
        "ls": lambda: _drain(opened.entries()),
        "play": lambda: _drain(player.chunks()),
        "window": lambda: _drain(player.chunks(opened.total_size - 1024)),
        "locate": lambda: opened.locate(paths.from_bytes(name)),
        "entry": lambda: opened.entry(paths.from_bytes(name)),
        "verify": lambda: player.verify(),
    }
    for what, reader in readers.items():
        with pytest.raises(atartape.TapeFormatError, match="does not name a path") as info:
            await reader()
        assert f"offset {offset}" in str(info.value), what


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize(
    "source", [b"../outside/key.txt", b"/etc/passwd", b"sub/../../x", b"sub/", b"a\0"]
)
async def test_a_bad_source_is_refused(dataset: Path, source: bytes) -> None:
    tape = await atartape.record(dataset)
    sql(
        tape.index_path,
        "UPDATE entries SET source = ? WHERE arc_path = ?",
        source,
        b"dataset/a.txt",
    )
    with pytest.raises(atartape.TapeFormatError, match=r"source .* does not name a path"):
        await _drain(tape.entries())
    with pytest.raises(atartape.TapeFormatError, match="does not name a path"):
        await tape.entry("dataset/a.txt")


async def test_a_bad_root_is_refused_when_the_tape_is_opened(dataset: Path) -> None:
    tape = await atartape.record(dataset)
    sql(tape.index_path, "UPDATE meta SET value = '../up' WHERE key = 'arc_root'")
    with pytest.raises(atartape.TapeFormatError, match=r"root '\.\./up' is not a name"):
        await atartape.Tape.open(tape.index_path)


async def test_an_embedded_member_is_checked_too(dataset: Path) -> None:
    tape = await atartape.record(dataset, embed_index=True)
    player = atartape.TapePlayer(tape)
    true = b"".join([c async for c in player.chunks()])
    sql(tape.index_path, "UPDATE embedded SET data = CAST(upper(data) AS BLOB)")
    (start,) = [r.start_offset for r in await _embedded_rows(tape)]
    got, error = await received_of(player.chunks())
    assert isinstance(error, atartape.TapeFormatError) and "embedded member" in str(error)
    assert got == true[: len(got)] and len(got) <= start
    sql(tape.index_path, "UPDATE embedded SET data = ?", true[start + 512 : -1024].rstrip(b"\0"))
    assert b"".join([c async for c in player.chunks()]) == true  # its bytes again: it plays
    sql(tape.index_path, "UPDATE embedded SET mode = 4095")
    got, error = await received_of(player.chunks())
    assert isinstance(error, atartape.TapeFormatError) and got == b""
    sql(tape.index_path, "UPDATE embedded SET arc_path = ?", b"../index.csv")
    with pytest.raises(atartape.TapeFormatError, match="does not name a path"):
        await _drain(player.chunks(start))


async def _embedded_rows(tape: atartape.Tape) -> list[_index.Row]:
    async with await _index.open_index(tape.index_path) as index:
        return await index.embedded_rows()


def downgrade(index: Path, version: int) -> None:
    """The index as an earlier atartape wrote it: no tree; version 1 lacked more."""
    with sqlite3.connect(index) as conn:
        conn.execute("DROP TABLE row_blocks")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
        if version == 1:
            conn.execute("ALTER TABLE entries DROP COLUMN listing")
            conn.execute("DELETE FROM meta WHERE key IN ('identity', 'noise', 'exclude')")
    conn.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_an_earlier_index_is_refused_until_recorded_again(
    dataset: Path, tmp_path: Path, version: int
) -> None:
    index = tmp_path / "old.db"
    fresh = await atartape.record(dataset, index_path=index, checksum="sha256")
    full = b"".join([c async for c in atartape.TapePlayer(fresh).chunks()])
    downgrade(index, version)
    with pytest.raises(atartape.TapeFormatError) as info:
        await atartape.Tape.open(index)
    assert f"version {version}" in str(info.value)
    assert f"atartape record {dataset} --index {index} --overwrite" in str(info.value)
    progress = atartape.Progress()
    again = await atartape.record(
        dataset, index_path=index, overwrite=True, checksum="sha256", progress=progress
    )
    assert progress.bytes == 0  # the digests of the old index were reused, no file re-read
    assert again.identity == fresh.identity
    assert b"".join([c async for c in atartape.TapePlayer(again).chunks()]) == full


class Reads:
    """Counts the rows a play reads from the index, and the blocks it checks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.blocks: list[int] = []
        self.tree_rows = 0
        self.rows = 0
        block, load_tree, rows_from = (
            _index.Index.block,
            _index.Index._load_tree,
            _index.Index.rows_from,
        )

        async def counting_block(index: _index.Index, number: int) -> Any:
            self.blocks.append(number)
            return await block(index, number)

        async def counting_tree(index: _index.Index) -> Any:
            tree = await load_tree(index)
            self.tree_rows += len(tree)
            return tree

        async def counting_rows(index: _index.Index, *args: Any) -> Any:
            found = await rows_from(index, *args)
            self.rows += len(found)
            return found

        monkeypatch.setattr(_index.Index, "block", counting_block)
        monkeypatch.setattr(_index.Index, "_load_tree", counting_tree)
        monkeypatch.setattr(_index.Index, "rows_from", counting_rows)


async def test_a_window_checks_a_bounded_number_of_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 8 * BLOCK_ROWS + 77
    await anyio.to_thread.run_sync(
        lambda: write_synthetic_index(tmp_path / "big.db", tmp_path / "src", n, materialize=n)
    )
    tape = await atartape.Tape.open(tmp_path / "big.db")
    reads = Reads(monkeypatch)
    player = atartape.TapePlayer(tape)
    tail = b"".join([c async for c in player.chunks(tape.total_size - 4096)])
    assert len(tail) == 4096
    # The tree (one digest per block) and the last block: never the n rows before it.
    assert reads.blocks == [8]
    assert reads.tree_rows == 9
    assert reads.rows == 77
    # A window across a block boundary reads the two blocks it touches, and no more.
    reads.blocks.clear()
    start = (5 * BLOCK_ROWS - 3) * 512
    got = b"".join([c async for c in player.chunks(start, start + 10 * 512)])
    assert len(got) == 10 * 512 and reads.blocks == [4, 5]
    # A row edited in a block the window does not touch is not read, so it does not matter...
    sql(tmp_path / "big.db", "UPDATE entries SET mode = 511 WHERE start_offset = 0")
    assert len(b"".join([c async for c in player.chunks(start, start + 512)])) == 512
    # ...and a window that touches it is refused.
    with pytest.raises(atartape.TapeFormatError, match="block 0"):
        await _drain(player.chunks(100, 200))


def cli(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "atartape", *map(str, args)],
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("edit", list(EDITS))
def test_cli_play_of_an_edited_index_fails_in_one_line(tmp_path: Path, edit: str) -> None:
    root, _ = make_folder(tmp_path)
    assert cli("-q", "record", root).returncode == 0
    index = root / ".tartape" / "index.db"
    true = cli("play", root).stdout
    with sqlite3.connect(index) as conn:
        start, size, mtime_ns = conn.execute(
            "SELECT start_offset, size, mtime_ns FROM entries WHERE arc_path = ?", (b"ds/zz.txt",)
        ).fetchone()
    conn.close()
    row = atartape.Entry(
        "ds/zz.txt", atartape.EntryKind.FILE, size, 0o644, 0, start, mtime_ns=mtime_ns
    )
    EDITS[edit](str(index), row, root)
    for offset in (0, start):
        done = cli("play", root, "--offset", offset)
        err = done.stderr.decode()
        assert done.returncode != 0, err
        assert err.strip().count("\n") == 0 and "Traceback" not in err, err
        assert "index" in err
        got = done.stdout
        assert got == true[offset : offset + len(got)]
        assert len(got) <= max(0, start - offset)  # no byte of the edited entry
        assert SECRET not in got


def test_cli_play_of_an_earlier_index_names_the_command(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write(root / "a.txt", "a\n")
    assert cli("-q", "record", root).returncode == 0
    downgrade(root / ".tartape" / "index.db", 2)
    done = cli("play", root)
    err = done.stderr.decode()
    assert done.returncode == 2 and err.strip().count("\n") == 0, err
    assert f"atartape record {root} --index" in err and "--overwrite" in err
    assert done.stdout == b""
    command = err.split("upgrade it: atartape ", 1)[1].split()
    assert cli("-q", *command).returncode == 0  # the command it names does upgrade it
    assert cli("play", root, "-o", tmp_path / "out.tar").returncode == 0


async def test_the_index_and_the_identity_see_the_same_values(dataset: Path) -> None:
    """The recorder hashes entries, a play hashes the rows read back: the same values."""
    tape = await atartape.record(dataset, anonymize=False, checksum="md5")
    entries = [e async for e in tape.entries()]
    assert any(e.owner is not None for e in entries)
    async with await _index.open_index(tape.index_path) as index:
        rows = [row async for row in index.rows()]
    assert [row.values() for row in rows] == [entry_values(e) for e in entries]
    assert [_index.Row.of(e).values() for e in entries] == [row.values() for row in rows]


@given(st.lists(st.binary(max_size=12) | st.sampled_from([b"a/./b", b"..", b"a//b", b"/a"])))
def test_the_quick_check_of_many_names_misses_none(names: list[bytes]) -> None:
    """What the batch check lets through, the row-by-row check lets through too."""
    slow = [paths.unsafe(name) for name in names]
    if any(slow):
        assert _index._suspect(names)
    for name, why in zip(names, slow, strict=True):
        quick = paths.unsafe(name)  # its own quick path agrees with the split
        parts = name.split(b"/")
        full = bool(name) and not name.startswith(b"/") and b"\0" not in name
        full = full and not any(p in (b"", b".", b"..") for p in parts)
        assert (quick is None) == full == (why is None)
