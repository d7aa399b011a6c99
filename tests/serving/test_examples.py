"""Each HTTP example runs: ``--self-test`` serves a folder, fetches it, checks it and exits 0.

(The examples also serve the real-server tests in test_servers.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("example", ["starlette_app.py", "trio_hypercorn.py", "aiohttp_app.py"])
def test_example_self_test(example: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--self-test"],
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"ok http://127.0.0.1:" in done.stdout


def test_examples_need_a_folder() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "aiohttp_app.py")],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert b"FOLDER" in done.stderr
