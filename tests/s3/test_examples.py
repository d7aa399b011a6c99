"""The S3 examples' self-tests: each starts its own SeaweedFS server on 127.0.0.1.

``dask_upload.py`` runs a Dask LocalCluster of two worker processes, one of which kills itself
mid-way (after sending its part, before reporting it): Dask runs that task again elsewhere, the
part is sent again with the same bytes, and the completed object is byte-identical to the tape.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.s3server import require_weed

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("example", "says"),
    [
        ("dask_upload.py", "worker killed mid-way: True; object byte-identical to the tape: True"),
        ("s3_multipart.py", "restored file identical: True"),
    ],
)
def test_example_self_test(example: str, says: str) -> None:
    require_weed()
    if example.startswith("dask"):
        pytest.importorskip("distributed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--self-test"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert says in done.stdout, done.stdout + done.stderr
    assert "skip" not in done.stdout
