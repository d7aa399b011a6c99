"""What tartape 3 users rely on: owners, shortened paths, every digest, sizes, reused digests."""

from __future__ import annotations

import hashlib
import os
import pwd
import tarfile
from pathlib import Path

import pytest

import atartape
from atartape.format import paths
from tests.helpers import write

pytestmark = pytest.mark.anyio


async def tar_of(tape: atartape.Tape, tmp_path: Path) -> tarfile.TarFile:
    data = b"".join([c async for c in atartape.TapePlayer(tape).chunks()])
    out = tmp_path / f"{tape.identity[:8]}.tar"
    out.write_bytes(data)
    return tarfile.open(out)


async def test_owners_are_kept_on_request(dataset: Path, tmp_path: Path) -> None:
    os.chown(dataset / "a.txt", 1234, 5678)
    scrubbed = await atartape.record(dataset, index_path=tmp_path / "s.db")
    kept = await atartape.record(dataset, index_path=tmp_path / "k.db", anonymize=False)
    assert scrubbed.anonymized and not kept.anonymized
    assert kept.fingerprint != scrubbed.fingerprint  # the headers differ
    with await tar_of(scrubbed, tmp_path) as archive:
        member = archive.getmember("dataset/a.txt")
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
    with await tar_of(kept, tmp_path) as archive:
        member = archive.getmember("dataset/a.txt")
        assert (member.uid, member.gid) == (1234, 5678)
        root = archive.getmember("dataset/sub")
        assert root.uname == pwd.getpwuid(os.getuid()).pw_name
    entry = await kept.entry("dataset/a.txt")
    assert entry.owner is not None and entry.owner.uid == 1234


async def test_long_paths_are_refused_with_the_remedy(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / ("L" * 146 + ".txt"), "long name")
    with pytest.raises(atartape.PathConstraintError, match="auto_truncate=True"):
        await atartape.record(root)


async def test_auto_truncate_keeps_the_originals(tmp_path: Path) -> None:
    root = tmp_path / "data"
    long_name = "L" * 146 + ".txt"
    deep = "/".join(f"level_{i:02d}_directory_name" for i in range(11))
    write(root / long_name, "long name")
    write(root / deep / "report.pdf", "deep")
    write(root / ("D" * 120) / "x.txt", "under a long folder")
    write(root / "short.txt", "as it was")
    tape = await atartape.record(root, auto_truncate=True)
    assert tape.auto_truncated >= 4
    entries = {e.arc_path: e async for e in tape.entries()}
    for arc, entry in entries.items():
        assert paths.violation(arc, is_dir=entry.is_dir) is None
    originals = {e.source_path: e for e in entries.values() if e.source_path is not None}
    assert long_name in originals and f"{deep}/report.pdf" in originals
    assert entries["data/short.txt"].source_path is None
    # Found by either path; played from the original file.
    found = await tape.entry(f"data/{deep}/report.pdf")
    assert found.arc_path != f"data/{deep}/report.pdf" and found.source_path == f"{deep}/report.pdf"
    with await tar_of(tape, tmp_path) as archive:
        extracted = archive.extractfile(found.arc_path)
        assert extracted is not None and extracted.read() == b"deep"
        short = archive.getmember(originals[long_name].arc_path)
        assert short.size == len("long name")
    # Deterministic: the same tree gives the same tape.
    again = await atartape.record(root, auto_truncate=True, overwrite=True)
    assert again.fingerprint == tape.fingerprint


async def test_a_name_like_a_shortened_one_does_not_collide(tmp_path: Path) -> None:
    root = tmp_path / "data"
    long_name = "L" * 146 + ".txt"
    write(root / long_name, "the long one")
    first = await atartape.record(root, auto_truncate=True, index_path=tmp_path / "1.db")
    shortened = (await first.entry(f"data/{long_name}")).arc_path
    write(root / shortened.split("/")[-1], "a real file with that very name")
    second = await atartape.record(root, auto_truncate=True, index_path=tmp_path / "2.db")
    names = [e.arc_path async for e in second.entries()]
    assert len(names) == len(set(names)) == 3
    with await tar_of(second, tmp_path) as archive:
        real = archive.extractfile(shortened)
        assert real is not None and real.read() == b"a real file with that very name"
        moved = archive.extractfile((await second.entry(f"data/{long_name}")).arc_path)
        assert moved is not None and moved.read() == b"the long one"


@pytest.mark.parametrize(
    ("checksum", "algorithm"),
    [(True, "sha256"), ("md5", "md5"), ("sha1", "sha1"), ("SHA512", "sha512")],
)
async def test_every_digest(dataset: Path, checksum: str | bool, algorithm: str) -> None:
    tape = await atartape.record(dataset, checksum=checksum)
    assert tape.has_file_checksums and tape.checksum_algorithm == algorithm
    entry = await tape.entry("dataset/a.txt")
    assert entry.checksum == hashlib.new(algorithm, b"hello\n").hexdigest()
    report = await atartape.TapePlayer(tape).verify(content=True)
    assert report


async def test_bad_checksum_names(dataset: Path) -> None:
    with pytest.raises(ValueError, match="blake2b"):
        await atartape.record(dataset, checksum="blake2b")


async def test_sizes(dataset: Path) -> None:
    tape = await atartape.record(dataset, exclude=["*.tmp"])
    files = [e async for e in tape.entries() if e.is_file]
    assert tape.data_size == sum(e.size for e in files) == 6 + 512 + 768000 + 1000
    assert tape.overhead_size == tape.total_size - tape.data_size
    assert not tape.has_file_checksums
    assert tape.exclude_patterns == ("*.tmp",)


async def test_digests_of_unchanged_files_are_reused(dataset: Path) -> None:
    first = atartape.Progress()
    tape = await atartape.record(dataset, checksum="sha256", progress=first)
    assert first.bytes == tape.data_size
    write(dataset / "a.txt", "changed\n")
    second = atartape.Progress()
    again = await atartape.record(dataset, checksum="sha256", overwrite=True, progress=second)
    assert second.bytes == len("changed\n")  # only the changed file was read again
    assert (await again.entry("dataset/a.txt")).checksum == hashlib.sha256(b"changed\n").hexdigest()
    big = await again.entry("dataset/sub/big.bin")
    assert big.checksum == hashlib.sha256((dataset / "sub" / "big.bin").read_bytes()).hexdigest()
    other = atartape.Progress()
    await atartape.record(dataset, checksum="md5", overwrite=True, progress=other)
    assert other.bytes == again.data_size  # another algorithm: everything is read
