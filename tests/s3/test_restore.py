"""Restore from a tape stored in S3: one file, one folder, with or without the index; S3Source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import atartape
from atartape import s3
from tests.helpers import tree as folder_tree
from tests.s3server import S3Server

from .conftest import PART, make_tree, tape_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stored(s3_env: S3Server, url: str, tree: Path) -> atartape.Tape:
    tape = await atartape.record(tree, checksum="sha256")
    await s3.upload(tape, url, part_size=PART)
    return tape


async def test_one_file_back_with_the_part_size_from_the_metadata(
    stored: atartape.Tape, url: str, tree: Path, tmp_path: Path, client: Any
) -> None:
    offline = await atartape.Tape.open(stored.index_path, source_root=tmp_path / "nowhere")
    gets: list[str] = []
    client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: gets.append(params["headers"]["Range"])
    )
    # f0.bin (7 MiB) spans parts 1 and 2: one ranged GET per part it touches, none across.
    path = await s3.restore(offline, url, "data/f0.bin", f"{tmp_path}/out/", client=client)
    assert path == tmp_path / "out" / "f0.bin"
    assert path.read_bytes() == (tree / "data" / "f0.bin").read_bytes()
    entry = await stored.entry("tree/data/f0.bin")
    # From its header (checked against the index before a byte is written) to its last byte.
    first, last = entry.start_offset, entry.data_offset + entry.size - 1
    assert gets == [f"bytes={first}-{PART - 1}", f"bytes={PART}-{last}"]
    # By index path, the full arc path, into a file name; then refusing to overwrite it.
    small = await s3.restore(stored.index_path, url, "tree/notes/small.txt", tmp_path / "s.txt")
    assert small.read_text() == "a small file, seed 1\n"
    with pytest.raises(FileExistsError):
        await s3.restore(stored.index_path, url, "tree/notes/small.txt", tmp_path / "s.txt")
    with pytest.raises(atartape.EntryNotFoundError):
        await s3.restore(stored.index_path, url, "tree/nothing", tmp_path)


async def test_a_folder_back(stored: atartape.Tape, url: str, tree: Path, tmp_path: Path) -> None:
    path = await s3.restore(stored, url, "tree/notes", tmp_path / "out")
    assert path == tmp_path / "out" / "notes"
    assert folder_tree(path) == folder_tree(tree / "notes")
    whole = await s3.restore(stored, url, "tree", tmp_path / "all")
    expected = {k: v for k, v in folder_tree(tree).items() if not k.startswith(".tartape")}
    assert folder_tree(whole) == expected  # the index is never in the tape


async def test_without_the_index_the_object_is_read_as_a_tar(
    stored: atartape.Tape, url: str, tree: Path, tmp_path: Path
) -> None:
    path = await s3.restore(None, url, "tree/data/f1.bin", tmp_path)
    assert path.read_bytes() == (tree / "data" / "f1.bin").read_bytes()
    folder = await s3.restore(None, url, "tree/notes", tmp_path / "n")
    assert folder_tree(folder) == folder_tree(tree / "notes")
    async with s3.S3Source(url) as source, atartape.open_archive(source) as archive:
        names = [member.name async for member in archive.members()]
        assert source.size == stored.total_size and source.tape is not None
        assert source.tape.identity == stored.identity and source.tape.part_size == PART
        assert await archive.read("tree/notes/small.txt") == b"a small file, seed 1\n"
    assert "tree/data/f0.bin" in names and "tree/notes/link" in names


async def test_another_tapes_index_is_refused(
    stored: atartape.Tape, url: str, tmp_path: Path
) -> None:
    other = await atartape.record(make_tree(tmp_path / "other" / "tree", seed=5))
    with pytest.raises(s3.S3IntegrityError, match="holds the recording"):
        await s3.restore(other, url, "tree/notes/small.txt", tmp_path / "x")
    assert not os.path.exists(tmp_path / "x")


async def test_a_replaced_object_is_not_mixed(
    stored: atartape.Tape, url: str, bucket: str, key: str, client: Any
) -> None:
    async with s3.S3Source(url) as source:
        first = await source.read_range(0, 512)
        client.put_object(Bucket=bucket, Key=key, Body=b"another object")
        with pytest.raises(s3.S3IntegrityError, match="changed while it was read"):
            await source.read_range(512, 1024)
    assert first[:5] == b"tree/"


async def test_a_sealed_compressed_tape_goes_up_sealed_and_comes_back(
    s3_env: S3Server, bucket: str, key: str, tree: Path, tmp_path: Path, client: Any
) -> None:
    """Uploaded as recorded (zstd, then age): the object is the sealed view, with its own
    identity; one file comes back through the seek table and the age chunks, with the key file
    beside the index or with the identity and no index at all."""
    from atartape.format import age

    identity = age.X25519Identity.generate()
    tape = await atartape.record(tree, compress="zstd", seal=[str(identity.recipient)])
    key += ".zst.age"  # SeaweedFS names a type from the extension when told octet-stream
    url = f"s3://{bucket}/{key}"
    result = await s3.upload(tape, url, part_size=PART)
    player = atartape.TapePlayer(tape)
    assert result.size == player.size != tape.total_size
    stored = client.get_object(Bucket=bucket, Key=key)
    assert stored["ContentType"] == player.content_type
    assert stored["Body"].read() == await tape_bytes(tape)
    assert (await s3.verify(tape, url)).size == player.size
    original = (tree / "data" / "f0.bin").read_bytes()
    path = await s3.restore(tape.index_path, url, "data/f0.bin", f"{tmp_path}/one/")
    assert path.read_bytes() == original
    folder = await s3.restore(tape, url, "notes", tmp_path / "folder")
    assert folder_tree(folder) == folder_tree(tree / "notes")
    bare = await s3.restore(
        None, url, f"{tape.arc_root}/data/f0.bin", tmp_path / "bare.bin", age_identity=str(identity)
    )
    assert bare.read_bytes() == original
    with pytest.raises(atartape.ArchiveFormatError, match="identity"):
        await s3.restore(None, url, f"{tape.arc_root}/data/f0.bin", tmp_path / "no.bin")
