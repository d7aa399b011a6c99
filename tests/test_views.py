"""Views of a tape: seekable zstd, age-sealed, and both, at any byte, read by the stock tools."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import anyio.to_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atartape
from atartape import transforms, views
from atartape.format import age, zstd_seekable
from tests.helpers import write

pytestmark = pytest.mark.anyio

IDENTITY = age.X25519Identity.generate()
RECIPIENT = str(IDENTITY.recipient)
FRAME = "64KiB"  # small frames: many frame and seek-table boundaries in a small tape


def tree(root: Path) -> Path:
    write(root / "a.txt", "hello\n" * 50)
    write(root / "random.bin", os.urandom(300_000))  # does not compress: frames of all sizes
    write(root / "text.txt", "the same line again\n" * 20_000)  # compresses well
    write(root / "sub" / "empty", b"")
    (root / "link").symlink_to("a.txt")
    return root


async def full(player: atartape.TapePlayer) -> bytes:
    return b"".join([c async for c in player.chunks()])


@pytest.fixture
async def tapes(tmp_path: Path) -> dict[str, atartape.Tape]:
    root = tree(tmp_path / "data")
    return {
        "zstd": await atartape.record(
            root, index_path=tmp_path / "z.db", compress="zstd", frame_size=FRAME
        ),
        "age": await atartape.record(root, index_path=tmp_path / "a.db", seal=[RECIPIENT]),
        "zstd+age": await atartape.record(
            root, index_path=tmp_path / "za.db", compress="zstd", frame_size=FRAME, seal=[RECIPIENT]
        ),
    }


async def test_views_of_a_recording(tapes: dict[str, atartape.Tape]) -> None:
    plain = await full(atartape.TapePlayer(tapes["zstd"], view="plain"))
    for view, tape in tapes.items():
        assert (
            tape.view == view
            and tape.views
            == ("plain", *view.split("+")[:1], view)[: 3 if view == "zstd+age" else 2]
        )
        player = atartape.TapePlayer(tape)  # the recorded view by default
        assert player.view == view and player.filename == "data" + views.suffix(view)
        assert player.identity != tape.identity  # a view has an identity of its own
        data = await full(player)
        assert len(data) == player.size == tape.view_size()
        assert await full(atartape.TapePlayer(tape, view="plain")) == plain
    with pytest.raises(ValueError, match="no 'age' view"):
        atartape.TapePlayer(tapes["zstd"], view="age")
    with pytest.raises(ValueError, match="events describe the tar"):
        atartape.TapePlayer(tapes["age"]).play()


async def test_an_unchanged_folder_recorded_again_keeps_its_compressed_identity(
    tapes: dict[str, atartape.Tape], tmp_path: Path
) -> None:
    """The compressed view is a function of the tape: same ETag, same recording URL."""
    first = tapes["zstd"]
    again = await atartape.record(
        tmp_path / "data",
        index_path=tmp_path / "z.db",
        compress="zstd",
        frame_size=FRAME,
        overwrite=True,
    )
    assert again.identity == first.identity
    assert atartape.TapePlayer(again).identity == atartape.TapePlayer(first).identity
    other = await atartape.record(
        tmp_path / "data", index_path=tmp_path / "z2.db", compress="zstd", frame_size="128KiB"
    )
    assert atartape.TapePlayer(other).identity != atartape.TapePlayer(first).identity


async def test_an_empty_window_in_the_age_header_is_empty(
    tapes: dict[str, atartape.Tape],
) -> None:
    player = atartape.TapePlayer(tapes["age"])
    assert [c async for c in player.chunks(5, 5)] == []
    assert b"".join([c async for c in player.chunks(5, 6)]) == (await full(player))[5:6]


@pytest.mark.parametrize("view", ["zstd", "age", "zstd+age"])
async def test_any_window_is_a_slice(tapes: dict[str, atartape.Tape], view: str) -> None:
    player = atartape.TapePlayer(tapes[view])
    data = await full(player)
    size = player.size
    edges = {0, 1, size - 1, size, size // 2}
    if view.endswith("age"):
        header = age.header_length(data) or 0
        for k in range(4):  # the header, and chunk boundaries after it
            edges |= {header + k * age.SEALED_CHUNK_SIZE + d for d in (-1, 0, 1)}
    else:
        edges |= {size - 9, size - 17, size - 30}  # inside the seek table and its footer
    edges = {e for e in edges if 0 <= e <= size}
    for a in sorted(edges):
        for b in sorted(edges):
            if a <= b:
                assert b"".join([c async for c in player.chunks(a, b)]) == data[a:b], (a, b)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.floats(0, 1), min_size=2, max_size=2))
async def test_random_windows_of_the_sealed_compressed_view(
    tapes: dict[str, atartape.Tape], cuts: list[float]
) -> None:
    player = atartape.TapePlayer(tapes["zstd+age"])
    data = await full(player)
    a, b = sorted(int(c * player.size) for c in cuts)
    assert b"".join([c async for c in player.chunks(a, b)]) == data[a:b]


async def test_volumes_of_a_view_join_to_the_whole(tapes: dict[str, atartape.Tape]) -> None:
    player = atartape.TapePlayer(tapes["zstd+age"])
    volumes = player.volumes("10000")
    assert volumes[0].name == "data.tar.zst.age.0000"
    joined = b""
    for volume in volumes:
        async for chunk in volume:
            joined += chunk
    assert joined == await full(player)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd tool is missing (Debian: zstd)")
async def test_zstd_and_tar_read_the_compressed_view(
    tapes: dict[str, atartape.Tape], tmp_path: Path
) -> None:
    data = await full(atartape.TapePlayer(tapes["zstd"]))
    plain = await full(atartape.TapePlayer(tapes["zstd"], view="plain"))
    out = tmp_path / "t.tar.zst"
    out.write_bytes(data)
    assert (
        subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True).stdout == plain
    )
    listing = subprocess.run(
        ["tar", "--zstd", "-tf", str(out)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "data/text.txt" in listing
    import pyzstd

    with pyzstd.SeekableZstdFile(out) as seekable:
        seekable.seek(len(plain) // 2)
        assert seekable.read(1000) == plain[len(plain) // 2 : len(plain) // 2 + 1000]


async def test_age_and_pyrage_open_the_sealed_views(
    tapes: dict[str, atartape.Tape], tmp_path: Path
) -> None:
    plain = await full(atartape.TapePlayer(tapes["age"], view="plain"))
    sealed = await full(atartape.TapePlayer(tapes["age"]))
    import pyrage

    opened = pyrage.decrypt(sealed, [pyrage.x25519.Identity.from_str(str(IDENTITY))])
    assert opened == plain
    if shutil.which("age"):
        key = tmp_path / "key.txt"
        key.write_text(str(IDENTITY) + "\n")
        result = subprocess.run(
            ["age", "-d", "-i", str(key)], input=sealed, capture_output=True, check=True
        )
        assert result.stdout == plain
    both = await full(atartape.TapePlayer(tapes["zstd+age"]))
    compressed = pyrage.decrypt(both, [pyrage.x25519.Identity.from_str(str(IDENTITY))])
    assert compressed == await full(atartape.TapePlayer(tapes["zstd+age"], view="zstd"))


async def test_a_passphrase_and_no_key_file(tmp_path: Path) -> None:
    root = tree(tmp_path / "data")
    tape = await atartape.record(root, passphrase="correct horse", work_factor=10)
    sealed = await full(atartape.TapePlayer(tape))
    import pyrage

    assert pyrage.passphrase.decrypt(sealed, "correct horse") == await full(
        atartape.TapePlayer(tape, view="plain")
    )
    os.unlink(views.key_path(tape.index_path))  # the key file stayed behind, elsewhere
    with pytest.raises(atartape.ViewError, match="no key"):
        await full(atartape.TapePlayer(tape))
    assert await full(atartape.TapePlayer(tape, age_identity="correct horse")) == sealed
    with pytest.raises(atartape.ViewError, match="does not open"):
        await full(atartape.TapePlayer(tape, age_identity="wrong"))


async def test_another_tapes_key_is_refused(tapes: dict[str, atartape.Tape]) -> None:
    other = views.key_path(tapes["zstd+age"].index_path)
    shutil.copy(other, views.key_path(tapes["age"].index_path))
    with pytest.raises(atartape.ViewError, match="another tape's key"):
        await full(atartape.TapePlayer(tapes["age"]))


async def test_the_key_never_goes_into_the_index(tapes: dict[str, atartape.Tape]) -> None:
    tape = tapes["age"]
    keys = await anyio.to_thread.run_sync(transforms.read_keys, views.key_path(tape.index_path))
    assert len(keys) == 1
    key = keys[0]
    assert key not in Path(tape.index_path).read_bytes()
    assert key.hex().encode() not in Path(tape.index_path).read_bytes()
    assert os.stat(views.key_path(tape.index_path)).st_mode & 0o777 == 0o600


async def test_another_zstd_build_is_refused(
    tapes: dict[str, atartape.Tape], monkeypatch: pytest.MonkeyPatch
) -> None:
    player = atartape.TapePlayer(tapes["zstd"])
    data = await full(player)
    real = zstd_seekable.compress_frame

    def other_build(chunk: bytes, params: zstd_seekable.FrameParams) -> bytes:
        made = real(chunk, params)
        if len(chunk) < 65536:  # the last frame: a build that ends it differently
            return made[:-5] + bytes(5)[:1] + made[-4:]
        return made

    monkeypatch.setattr(zstd_seekable, "compress_frame", other_build)
    received = bytearray()
    with pytest.raises(atartape.ViewError, match="another build"):
        async for chunk in player.chunks():
            received += chunk
    assert data.startswith(bytes(received))  # what went out was right, up to that frame


@pytest.mark.parametrize("view", ["age", "zstd+age"])
async def test_a_rewrite_with_the_mtime_put_back_is_never_sealed_again(
    tapes: dict[str, atartape.Tape], tmp_path: Path, view: str
) -> None:
    """Same size, same mtime, other bytes: sealing chunk i again would reuse its nonce with
    other plaintext. The block (or frame) digest stops it before any chunk of it is sealed."""
    tape = tapes[view]
    player = atartape.TapePlayer(tape)
    sealed = await full(player)
    path = tmp_path / "data" / "random.bin"
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[150_000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    received = bytearray()
    with pytest.raises(atartape.TarIntegrityError, match="put back"):
        async for chunk in player.chunks():
            received += chunk
    assert sealed.startswith(bytes(received))


async def test_cli_records_and_plays_views(tmp_path: Path) -> None:
    root = tree(tmp_path / "data")
    key = tmp_path / "pass.txt"
    key.write_text("secret words\n")
    import sys

    cli = [sys.executable, "-m", "atartape"]
    subprocess.run(
        [*cli, "record", str(root), "--zstd=5", "--frame-size", "64KiB"],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out.tar.zst"
    subprocess.run([*cli, "play", str(root), "-o", str(out)], check=True, capture_output=True)
    plain = tmp_path / "out.tar"
    subprocess.run(
        [*cli, "play", str(root), "--view", "plain", "-o", str(plain)],
        check=True,
        capture_output=True,
    )
    if shutil.which("zstd"):
        decompressed = subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True)
        assert decompressed.stdout == plain.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(plain.read_bytes())) as archive:
        assert "data/text.txt" in archive.getnames()


async def test_a_new_seal_keeps_the_previous_key_beside_its_own(tmp_path: Path) -> None:
    """The key file goes in place before the index, with the previous recording's key after
    the new one: a play that opened the old index a moment before finds its key, and each
    index picks the key that opens its own seal."""
    root = tree(tmp_path / "data")
    old = await atartape.record(root, index_path=tmp_path / "i.db", seal=[RECIPIENT])
    old_keys = await anyio.to_thread.run_sync(transforms.read_keys, views.key_path(old.index_path))
    old_copy = tmp_path / "old.db"
    shutil.copy(old.index_path, old_copy)
    write(root / "a.txt", "rewritten\n")
    new = await atartape.record(
        root, index_path=tmp_path / "i.db", seal=[RECIPIENT], overwrite=True
    )
    keys = await anyio.to_thread.run_sync(transforms.read_keys, views.key_path(new.index_path))
    assert len(keys) == 2 and keys[1] == old_keys[0] and keys[0] != keys[1]
    # The old recording, as a reader that opened it just before the swap sees it:
    shutil.copy(views.key_path(new.index_path), views.key_path(str(old_copy)))
    stale = await atartape.Tape.open(old_copy, source_root=tmp_path / "nowhere")
    assert await transforms.unseal_key(stale.meta, str(old_copy), None) == old_keys[0]
    assert await transforms.unseal_key(new.meta, new.index_path, None) == keys[0]
