"""``atartape upload``, ``restore``, ``parts`` and ``play --part`` as users run them: in a
subprocess, against the SeaweedFS test server, credentials from the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.s3server import S3Server

from .conftest import PART, make_tree, object_bytes, pending_uploads

TIMEOUT = 120
ATARTAPE = [sys.executable, "-m", "atartape"]
ONE_PART_AT_A_TIME = ["--part-size", "5MiB", "--concurrency", "1"]


@pytest.fixture
def env(s3_server: S3Server) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**clean, **s3_server.environ}


def run(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atartape", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


def ok(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = run(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def fails(code: int, *args: object, env: dict[str, str]) -> str:
    done = run(*args, env=env)
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def test_killed_upload_resumes_and_the_object_plays_back(
    env: dict[str, str], bucket: str, key: str, url: str, client: Any, tree: Path, tmp_path: Path
) -> None:
    ok("record", tree, env=env)
    plan = ok("parts", tree, "--part-size", "5MiB", env=env).stdout.split("\n")
    assert plan[0] == f"1 0 {PART} {PART}" and len([line for line in plan if line]) == 3
    as_json = json.loads(ok("parts", tree, "--part-size", "5MiB", "--json", env=env).stdout)
    assert [p["number"] for p in as_json["parts"]] == [1, 2, 3]

    # kill -9 after two parts (the test-only hook: the process SIGKILLs itself).
    hooked = {**env, "ATARTAPE_TEST_KILL_AFTER_PARTS": "2"}
    args = ("upload", tree, url, "--part-size", "5MiB", "--concurrency", "1")
    killed = run(*args, env=hooked)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [upload_id] = pending_uploads(client, bucket, key)
    listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert sorted(p["PartNumber"] for p in listed) == [1, 2]

    again = ok("upload", tree, url, "--json", env=env)
    assert "resuming this tape's pending upload" in again.stderr
    result = json.loads(again.stdout)
    assert result["kept"] == [1, 2] and result["sent"] == [3] and result["resumed"]
    assert "verified" in again.stderr

    stored = object_bytes(client, bucket, key)
    ok("play", tree, "-o", tmp_path / "full.tar", env=env)
    assert (tmp_path / "full.tar").read_bytes() == stored
    for number in (1, 3):
        start = (number - 1) * PART
        played = subprocess.run(
            [*ATARTAPE, "play", tree, "--part", str(number), "--part-size", "5MiB", "-o", "-"],
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
            check=True,
        ).stdout
        assert played == stored[start : start + PART]

    # Run again: already complete, verified, nothing sent.
    assert "already complete" in ok("upload", tree, url, env=env).stderr


def test_restore_one_file_from_the_command_line(
    env: dict[str, str], url: str, tree: Path, tmp_path: Path
) -> None:
    ok("record", tree, "--checksum", "sha256", env=env)
    ok("upload", tree, url, "--part-size", "5MiB", "--checksum", "crc32c", env=env)
    index = tree / ".tartape" / "index.db"
    out = tmp_path / "f0.bin"
    ok("restore", url, "data/f0.bin", out, "--index", index, env=env)
    assert out.read_bytes() == (tree / "data" / "f0.bin").read_bytes()
    ok("restore", url, "tree/notes", tmp_path / "notes", env=env)  # no index: read as a tar
    assert (tmp_path / "notes" / "notes" / "small.txt").read_text() == "a small file, seed 1\n"
    assert "exists" in fails(2, "restore", url, "data/f0.bin", out, "--index", index, env=env)
    missing = fails(2, "restore", url, "tree/none", tmp_path / "x", "--index", index, env=env)
    assert "tree/none" in missing


def test_bad_input_gets_one_line_and_status_2(
    env: dict[str, str], url: str, tree: Path, tmp_path: Path
) -> None:
    ok("record", tree, env=env)
    assert "s3://BUCKET/KEY" in fails(2, "upload", tree, "s3://only-bucket", env=env)
    small = fails(2, "upload", tree, url, "--part-size", "1MiB", env=env)
    assert "under S3's smallest part, 5MiB" in small
    assert "NoSuchBucket" in fails(2, "upload", tree, "s3://no-such-bucket-x/k", env=env)
    assert "--part-size" in fails(2, "play", tree, "--part", "1", "-o", "-", env=env)
    assert "parts 1 to 3" in fails(
        2, "play", tree, "--part", "4", "--part-size", "5MiB", "-o", "-", env=env
    )
    assert "--offset" in fails(
        2, "play", tree, "--part", "1", "--part-size", "5MiB", "--offset", "5", "-o", "-", env=env
    )
    no_keys = {
        k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    no_keys["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    assert "no AWS credentials" in fails(2, "upload", tree, url, env=no_keys)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_ctrl_c_prints_one_line(
    env: dict[str, str], url: str, tmp_path: Path, backend: str
) -> None:
    big = make_tree(tmp_path / "big", sizes=(12 * 1024 * 1024, 12 * 1024 * 1024))
    ok("record", big, env=env)
    with subprocess.Popen(
        [*ATARTAPE, "--backend", backend, "upload", big, url, *ONE_PART_AT_A_TIME],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stderr is not None
        try:
            first = proc.stderr.readline()  # "uploading to ...": parts are being sent
            assert "uploading to" in first, first
            proc.send_signal(signal.SIGINT)
            rest = proc.communicate(timeout=TIMEOUT)[1]
        finally:
            proc.kill()
    assert proc.returncode == 130, rest
    assert rest.strip() == "atartape upload: interrupted"


def test_restore_without_an_index_reads_the_archive_to_its_real_end(
    env: dict[str, str], client: Any, bucket: str, key: str, url: str, tmp_path: Path
) -> None:
    """Issue 20, item 5: an archive from outside is cut inside a member's padding (GNU tar:
    "Unexpected EOF in archive"): exit 1, one line, nothing written; one that ends after a
    member without its zero blocks restores, with a one-line warning."""
    from tests.archive import tarbuild as tb

    archive = tb.file("a.txt", b"AAAA") + tb.file("b.txt", b"B" * 600)  # b's padding: to 2560
    client.put_object(Bucket=bucket, Key=key, Body=archive[:2148])
    line = fails(1, "restore", url, "a.txt", tmp_path / "cut.txt", env=env)
    assert "truncated" in line and "padding of 'b.txt'" in line
    assert not (tmp_path / "cut.txt").exists()
    client.put_object(Bucket=bucket, Key=key, Body=archive)
    done = ok("restore", url, "a.txt", tmp_path / "a.txt", env=env)
    assert (tmp_path / "a.txt").read_bytes() == b"AAAA"
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "may be truncated" in warnings[0]
