"""Bad usage that the library finds (not the parser): exit 2 and one line saying what to do,
never "internal error" (which reads as exit 1, "a difference was found")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import write

TIMEOUT = 60


def atartape(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atartape", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_verify_content_of_a_tape_without_digests(tmp_path: Path) -> None:
    write(tmp_path / "ds" / "a.txt", "hello\n")
    assert atartape("-q", "record", tmp_path / "ds").returncode == 0
    done = atartape("verify", tmp_path / "ds", "--content")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "atartape verify: tape 'ds' was recorded without file digests, so --content has "
        "nothing to compare with: record it with 'atartape record --checksum sha256' "
        "(--overwrite to replace the index), or verify without --content"
    ]
    assert done.stdout == ""


def test_a_bad_age_recipient_is_bad_usage(tmp_path: Path) -> None:
    write(tmp_path / "ds" / "a.txt", "hello\n")
    done = atartape("record", tmp_path / "ds", "--age-recipient", "age1nope")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("atartape record: bad age recipient") and "internal" not in line
    assert not (tmp_path / "ds" / ".tartape" / "index.db").exists()
