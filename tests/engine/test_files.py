"""Files written whole or not at all: temporary names, even for long final names, and the
leftovers of killed writers."""

from __future__ import annotations

import os
from pathlib import Path

from atartape._engine import files


def test_a_long_final_name_gets_a_short_temporary_one(tmp_path: Path) -> None:
    final = tmp_path / ("é" * 120 + ".tar")  # 244 bytes: its temporary name must be shorter
    temp = files.temp_name(str(final))
    assert len(os.fsencode(os.path.basename(temp))) < 200
    out = files.AtomicFile(str(final))
    out.write(b"whole")
    out.publish()
    assert final.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    for name in ("short.db", "x" * 250):
        final = str(tmp_path / name)
        ours = files.temp_name(final)
        dead = ours.replace(f".{os.getpid()}.", ".999999999.")
        Path(dead).write_bytes(b"left by a killed writer")
        Path(ours).write_bytes(b"still being written")
        other = tmp_path / f".{name[:20]}-unrelated.tmp"
        other.write_bytes(b"not ours")
        assert files.remove_stale(final) == [dead]
        assert Path(ours).exists() and other.exists()
        Path(ours).unlink()
        other.unlink()
