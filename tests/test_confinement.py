"""A folder swapped for a symlink leaks nothing from outside, whatever window is played.

The attack (issue 20, case 1): record ``share/`` holding ``share/d/secret.txt``; then replace
``share/d`` with a symlink to a folder outside whose ``secret.txt`` has the recorded size and
(forged) mtime. Every source is opened beneath one handle on ``share/`` without following a
symlink in any component, so a play from any byte, a volume, a resume, a range, a transfer or a
race stops with :class:`TarIntegrityError` naming the entry, before any byte of it.

Each test runs on both ways of resolving a path (``openat2``, and the walk component by
component from the root handle that replaces it where the kernel lacks it).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import atartape
from atartape import TarIntegrityError
from tests.helpers import write

pytestmark = pytest.mark.anyio

SECRET = b"TOPSECRET!"  # what the outside file holds: no byte of it may leave
WALK_ENV = "_ATARTAPE_BENEATH_WALK"  # forces the walk in a subprocess (see _engine/beneath.py)
NOT_BENEATH = "a folder on its path is now a symlink"
TIMEOUT = 60


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``openat2`` where the kernel has it (skipped elsewhere), or the walk from the root."""
    try:
        from atartape._engine import beneath
    except ImportError:  # before confinement: there is only one way
        yield request.param
        return
    if request.param == "openat2" and not beneath.use_openat2(True):
        pytest.skip("openat2 is not available here")
    if request.param == "walk":
        beneath.use_openat2(False)
        monkeypatch.setenv(WALK_ENV, "1")
    try:
        yield request.param
    finally:
        beneath.use_openat2(True)


@dataclass
class Share:
    base: Path
    root: Path  # share/
    outside: Path  # the folder share/d is swapped for
    tape: atartape.Tape
    full: bytes  # the tape's bytes, played before the swap
    folder: atartape.Entry  # share/d
    secret: atartape.Entry  # share/d/secret.txt

    def forge(self) -> None:
        """Give ``outside`` a file for each of share/d's, with its size and mtime."""
        for path in (self.root / "d").iterdir():
            st = path.stat()
            forged = self.outside / path.name
            forged.write_bytes(forged_content(st.st_size))
            os.utime(forged, ns=(st.st_atime_ns, st.st_mtime_ns))

    def swap(self) -> None:
        """Replace share/d with a symlink to ``outside``, whose files look recorded."""
        self.forge()
        shutil.rmtree(self.root / "d")
        (self.root / "d").symlink_to(self.outside)

    def leaked(self, data: bytes) -> bool:
        return SECRET in data


def forged_content(size: int) -> bytes:
    return (SECRET * (size // len(SECRET) + 1))[:size]


async def make_share(
    base: Path,
    *,
    lead: int = 1000,
    secret: int = 3000,
    checksum: str | None = None,
    more: int = 0,
) -> Share:
    """share/{a.bin (``lead`` bytes), d/secret.txt (``secret`` bytes), z.txt}, and ``more``
    small files in d/, recorded."""
    root = base / "share"
    write(root / "a.bin", os.urandom(lead))
    write(root / "d" / "secret.txt", (b"public-" * (secret // 7 + 1))[:secret])
    for number in range(more):
        write(root / "d" / f"f{number:03d}.txt", b"public-" * 10)
    write(root / "z.txt", "z")
    (base / "outside").mkdir()
    tape = await atartape.record(root, checksum=checksum)
    full = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    folder = await tape.entry("share/d")
    entry = await tape.entry("share/d/secret.txt")
    return Share(base, root, base / "outside", tape, full, folder, entry)


async def play_from(share: Share, start: int, end: int | None = None) -> tuple[bytes, Exception]:
    """The bytes a consumer got from ``start`` and the error that stopped them."""
    got = bytearray()
    with pytest.raises(TarIntegrityError) as info:
        async for chunk in atartape.TapePlayer(share.tape).chunks(start, end):
            got += chunk
    return bytes(got), info.value


def assert_refused(
    share: Share, error: BaseException, arc_path: str = "share/d/secret.txt"
) -> None:
    assert isinstance(error, TarIntegrityError)
    assert error.reason == "type" and error.arc_path == arc_path
    assert arc_path in str(error)


# ----------------------------------------------------------------------------- the library


async def test_every_window_after_the_folder_is_refused(tmp_path: Path, resolution: str) -> None:
    share = await make_share(tmp_path)
    await anyio.to_thread.run_sync(share.swap)
    # A full play stops at the folder itself (lstat sees the symlink).
    got, error = await play_from(share, 0)
    assert_refused(share, error, "share/d")
    assert "is now a symlink" in str(error) and share.full.startswith(got)
    got, error = await play_from(share, share.folder.start_offset + 1)  # inside d/'s header
    assert_refused(share, error, "share/d")
    secret = share.secret
    for start in (
        share.folder.end_offset,  # right after d/'s header: the file's header
        secret.data_offset,  # its first byte
        secret.data_offset + 1000,  # the middle of it
    ):
        got, error = await play_from(share, start)
        assert_refused(share, error)
        assert NOT_BENEATH in str(error)
        assert not share.leaked(got)
        assert got == b""  # the window starts in the entry: nothing of it went out
    # The events API, from the file's header, and a window ending inside it.
    player = atartape.TapePlayer(share.tape)
    with pytest.raises(TarIntegrityError, match=NOT_BENEATH):
        async for _ in player.play(start_offset=secret.start_offset):
            pass
    got, error = await play_from(share, secret.data_offset, secret.data_offset + 100)
    assert_refused(share, error)
    assert got == b""


async def test_a_volume_inside_the_file_is_refused(tmp_path: Path, resolution: str) -> None:
    share = await make_share(tmp_path, lead=10_000, secret=20_000)
    size = 16 * 1024  # volume 1 starts inside the secret's content
    assert share.secret.data_offset < size < share.secret.end_offset
    await anyio.to_thread.run_sync(share.swap)
    volume = atartape.TapePlayer(share.tape).volume(1, size)
    got = bytearray()
    with pytest.raises(TarIntegrityError, match=NOT_BENEATH) as info:
        async for chunk in volume:
            got += chunk
    assert_refused(share, info.value)
    assert not share.leaked(bytes(got)) and not got


async def test_a_one_shot_tape_is_confined_too(tmp_path: Path, resolution: str) -> None:
    share = await make_share(tmp_path)
    tape = atartape.TarTape()
    tape.add_folder(share.root)
    await tape.prepare()
    await anyio.to_thread.run_sync(share.swap)
    got = bytearray()
    with pytest.raises(TarIntegrityError, match=NOT_BENEATH):
        async for chunk in tape.chunks(share.secret.start_offset):
            got += chunk
    assert not share.leaked(bytes(got))


async def test_checksummed_tape_and_verify(tmp_path: Path, resolution: str) -> None:
    share = await make_share(tmp_path, checksum="sha256")
    await anyio.to_thread.run_sync(share.swap)
    got, error = await play_from(share, share.secret.start_offset)
    assert_refused(share, error)
    assert not share.leaked(got)
    for content in (False, True):
        report = await atartape.TapePlayer(share.tape).verify(content=content)
        found = {d.arc_path: d for d in report.differences}
        assert found["share/d"].reason == "type"
        assert found["share/d/secret.txt"].reason == "type"
        assert NOT_BENEATH in found["share/d/secret.txt"].message
        assert report.hashed_bytes == (1000 + 1 if content else 0)  # a.bin, z.txt: not outside


# ----------------------------------------------------------------------------- the race


def _exchange() -> object:
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        pytest.skip("no renameat2 in this libc")
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return call


RACE_PLAYS = int(os.environ.get("ATARTAPE_RACE_PLAYS", "120"))


class Swapping:
    """A thread that swaps share/d and a symlink to outside with renameat2(RENAME_EXCHANGE),
    as fast as it can, until the block ends."""

    def __init__(self, share: Share, tmp_path: Path) -> None:
        self.exchange = _exchange()
        link = tmp_path / "link"
        link.symlink_to(share.outside)
        self.names = os.fsencode(share.root / "d"), os.fsencode(link)
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        a, b = self.names
        while not self.stop.is_set():
            if self.exchange(-100, a, -100, b, 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
                raise OSError(ctypes.get_errno(), "renameat2")
            self.swaps += 1

    def __enter__(self) -> Swapping:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        if os.path.islink(self.names[0]):  # leave share/d a folder
            self.exchange(-100, self.names[0], -100, self.names[1], 2)


async def test_a_rename_exchange_race_leaks_nothing(tmp_path: Path, resolution: str) -> None:
    """A thread swaps share/d and a symlink to outside with renameat2(RENAME_EXCHANGE), as
    fast as it can, while the tape plays whole, again and again: no play ever sends a byte of
    the outside files (some stop, some see the folder in place and finish). d/ holds many
    files, so a play spends long enough in it for the swaps to land between its checks."""
    share = await make_share(tmp_path, more=100)
    await anyio.to_thread.run_sync(share.forge)
    leaks = stopped = finished = 0
    with Swapping(share, tmp_path) as swapping, anyio.fail_after(TIMEOUT):
        for _ in range(RACE_PLAYS):
            got = bytearray()
            try:
                async for chunk in atartape.TapePlayer(share.tape).chunks():
                    got += chunk
            except TarIntegrityError:
                stopped += 1
            else:
                finished += 1
            leaks += share.leaked(bytes(got))
    assert leaks == 0, f"{leaks} of {RACE_PLAYS} plays sent the outside file"
    assert stopped + finished == RACE_PLAYS and swapping.swaps > 0


async def test_a_recording_racing_the_swap_reads_nothing_outside(
    tmp_path: Path, resolution: str
) -> None:
    """The scan walks by descriptors: each folder is opened beneath the root and read through
    its descriptor, so the digests it records are never those of the outside files."""
    share = await make_share(tmp_path, more=20)
    await anyio.to_thread.run_sync(share.forge)
    recorded = share.secret.checksum  # None: this tape has none; the digest of the real file
    real = hashlib.sha256((share.root / "d" / "secret.txt").read_bytes()).hexdigest()
    outside = hashlib.sha256((share.outside / "secret.txt").read_bytes()).hexdigest()
    assert recorded is None and real != outside
    index = tmp_path / "race.db"
    digests: list[str | None] = []
    with Swapping(share, tmp_path), anyio.fail_after(TIMEOUT):
        for _ in range(RACE_PLAYS // 4):
            try:
                tape = await atartape.record(
                    share.root, index_path=index, overwrite=True, checksum="sha256"
                )
                entry = await tape.entry("share/d/secret.txt")
            except (TarIntegrityError, atartape.EntryNotFoundError):
                continue  # met the folder as a symlink: stopped, or recorded it as one
            except OSError as exc:  # a symlink when listed, a folder when its link was read
                assert exc.errno == errno.EINVAL  # noqa: PT017
                continue
            digests.append(entry.checksum)
    assert outside not in digests
    assert set(digests) <= {real}


# ----------------------------------------------------------------------------- the command line


def run_cli(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "atartape", *map(str, args)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_cli_refused(done: subprocess.CompletedProcess[bytes], share: Share) -> None:
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert "Traceback" not in err and "share/d/secret.txt" in err and NOT_BENEATH in err
    assert not share.leaked(done.stdout)


def test_cli_play_offset_and_part(tmp_path: Path, resolution: str) -> None:
    share = anyio.run(lambda: make_share(tmp_path, lead=10_000, secret=20_000))
    share.swap()
    for start in (share.secret.start_offset, share.secret.data_offset + 512):
        assert_cli_refused(run_cli("play", share.root, "--offset", start), share)
    # Part 2 of 16 KiB parts starts inside the secret's content.
    assert_cli_refused(run_cli("play", share.root, "--part", 2, "--part-size", "16KiB"), share)


def test_cli_resume_after_the_folder(tmp_path: Path, resolution: str) -> None:
    """A partial cut inside the file whose last bytes the outside file repeats: a resume that
    checks the bytes it holds against the outside file would find them equal."""
    from atartape.cli.commands import resume_record, resume_record_path

    share = anyio.run(lambda: make_share(tmp_path, secret=300_000))
    cut = share.secret.data_offset + 200_000
    out = tmp_path / "out.tar"
    out.write_bytes(share.full[:cut])
    Path(resume_record_path(str(out))).write_bytes(resume_record(share.tape, 0, len(share.full)))
    share.swap()
    # The outside file holds the recorded bytes up to the cut (so the partial matches it), then
    # the secret.
    original = share.full[share.secret.data_offset : cut]
    forged = share.outside / "secret.txt"
    st = forged.stat()
    forged.write_bytes(original + forged_content(share.secret.size - len(original)))
    os.utime(forged, ns=(st.st_atime_ns, st.st_mtime_ns))
    done = run_cli("play", share.root, "-o", out, "--resume")
    assert done.returncode != 0, done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
    assert not share.leaked(out.read_bytes())
    assert share.full.startswith(out.read_bytes())
