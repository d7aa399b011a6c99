"""The command line, run as users run it: ``python -m atartape`` in a subprocess."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import tarfile
import termios
import time
from pathlib import Path

import anyio
import httpx
import pytest

import atartape
from atartape.cli.commands import resume_record, resume_record_path
from tests.helpers import write

TIMEOUT = 60


def run(
    *args: object, env: dict[str, str] | None = None, stderr: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "atartape", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )


def ok(*args: object) -> str:
    done = run(*args)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    return done.stdout.decode()


def fails(code: int, *args: object) -> str:
    """Run a command that must fail with ``code`` and one clear line on stderr."""
    done = run(*args)
    err = done.stderr.decode()
    assert done.returncode == code, (done.returncode, err)
    assert "Traceback" not in err
    assert err.startswith("atartape"), err
    assert err.strip().count("\n") == 0, err
    return err


def start(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "atartape", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_line(proc: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    """Read the process's stderr until a line matches ``pattern`` (deadline: TIMEOUT)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            match = re.search(pattern, seen.decode(errors="replace"))
            if match:
                return match
        elif proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"no line matching {pattern!r} in {seen!r}")


def make_dataset(root: Path) -> Path:
    """The tree of conftest's ``dataset`` fixture."""
    write(root / "a.txt", "hello\n")
    write(root / "empty.bin", b"")
    write(root / "exact.bin", b"x" * 512)
    write(root / "sub" / "big.bin", bytes(range(256)) * 3000)
    write(root / "sub" / "deeper" / "c.txt", "c" * 1000, mode=0o600)
    (root / "empty_dir").mkdir()
    (root / "link").symlink_to("a.txt")
    return root


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recorded dataset that tests only read (recorded once per module: fewer processes)."""
    root = make_dataset(tmp_path_factory.mktemp("shared") / "dataset")
    ok("record", root)
    return root


@pytest.fixture(scope="module")
def shared_full(shared: Path) -> bytes:
    out = shared.parent / "full.tar"
    assert ok("play", shared, "-o", out) == ""
    return out.read_bytes()


@pytest.fixture
def recorded(dataset: Path) -> Path:
    """A recorded dataset of the test's own, which it may change."""
    ok("record", dataset)
    return dataset


def test_record_info_ls(dataset: Path, tmp_path: Path) -> None:
    text = ok("record", dataset)
    fingerprint = re.search(r"fingerprint\s+([0-9a-f]{64})", text)
    assert fingerprint and re.search(r"entries\s+10 \(5 files\)", text)
    err = fails(2, "record", dataset)
    assert "already exists" in err and "--overwrite" in err
    again = json.loads(ok("record", dataset, "--overwrite", "--json", "--checksum", "sha256"))
    assert len(again["fingerprint"]) == 64 and again["checksum"] == "sha256"
    # Global and per-command options, on both backends.
    for args in (["--backend", "trio", "info"], ["info", "--backend", "trio"], ["-q", "info"]):
        info = json.loads(ok(*args, dataset, "--json"))
        assert info["fingerprint"] == again["fingerprint"] and info["entry_count"] == 10
    lines = ok("ls", dataset, "--backend", "trio").splitlines()
    assert len(lines) == 10
    offsets = [int(line.split()[0]) for line in lines]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert any(line.split()[2:] == ["symlink", "dataset/link", "->", "a.txt"] for line in lines)
    big = next(line.split() for line in lines if line.endswith("sub/big.bin"))
    assert big[1:3] == ["768000", "file"]
    # An index elsewhere, with excludes; info and ls read it without the default index.
    index = tmp_path / "cat" / "ds.db"
    ok("record", dataset, "--index", index, "--exclude", "*.txt", "--exclude", "sub")
    names = [line.split()[3] for line in ok("ls", dataset, "--index", index).splitlines()]
    assert names == ["dataset", "dataset/empty.bin", "dataset/empty_dir", "dataset/exact.bin",
                     "dataset/link"]  # fmt: skip


def test_play_stdout_and_windows(shared: Path, shared_full: bytes) -> None:
    done = run("play", shared, "-o", "-")
    assert done.returncode == 0 and done.stderr == b""
    assert done.stdout == shared_full  # nothing but the tar on stdout
    with tarfile.open(fileobj=io.BytesIO(shared_full)) as archive:
        member = archive.extractfile("dataset/sub/big.bin")
        assert member is not None
        assert member.read() == (shared / "sub" / "big.bin").read_bytes()
    assert run("play", shared, "--backend", "trio").stdout == shared_full  # stdout is the default
    a, b = 700, len(shared_full) - 3000
    assert run("play", shared, "--offset", a, "--end", b).stdout == shared_full[a:b]
    assert run("play", shared, "--offset", len(shared_full)).stdout == b""


def cut_short(out: Path, data: bytes, tape: atartape.Tape, start: int, end: int) -> None:
    """A play of [start, end) to ``out`` that stopped after ``data`` (as a crash leaves it)."""
    out.write_bytes(data)
    Path(resume_record_path(str(out))).write_bytes(resume_record(tape, start, end))


def test_play_resume(shared: Path, shared_full: bytes, tmp_path: Path) -> None:
    tape = anyio.run(atartape.Tape.discover, shared)
    out = tmp_path / "part.tar"
    record = Path(resume_record_path(str(out)))
    for cut in (0, 1, 2048 + 1000, len(shared_full) // 2, len(shared_full) - 1):
        cut_short(out, shared_full[:cut], tape, 0, tape.total_size)
        done = run("play", shared, "-o", out, "--resume")
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == shared_full
        assert not record.exists()  # complete: nothing left to resume
        if 0 < cut < len(shared_full):
            assert f"resuming {out} at byte {cut}".encode() in done.stderr
    out.unlink()
    ok("play", shared, "-o", out, "--resume", "--quiet")  # no file yet: a full play
    assert out.read_bytes() == shared_full
    # A window resumes inside the window.
    a, b = 1000, 600_000
    cut_short(out, shared_full[a : a + 12345], tape, a, b)
    ok("play", shared, "-o", out, "--resume", "--offset", a, "--end", b)
    assert out.read_bytes() == shared_full[a:b]
    assert "-o OUT" in fails(2, "play", shared, "--resume")


def test_resume_refuses_what_it_cannot_prove(
    shared: Path, shared_full: bytes, tmp_path: Path
) -> None:
    tape = anyio.run(atartape.Tape.discover, shared)
    out = tmp_path / "part.tar"
    half = shared_full[: len(shared_full) // 2]
    # No record beside it: a complete file, or one that atartape did not write.
    out.write_bytes(half)
    assert "no record of the play" in fails(2, "play", shared, "-o", out, "--resume")
    assert out.read_bytes() == half
    # Another window of this tape.
    cut_short(out, half, tape, 512, tape.total_size)
    assert "the window 512-" in fails(2, "play", shared, "-o", out, "--resume")
    assert out.read_bytes() == half
    # Another recording of the tape (or another tape): its identity differs.
    other = dataclasses.replace(tape, identity="0" * 64)
    cut_short(out, half, other, 0, tape.total_size)
    assert "another recording" in fails(2, "play", shared, "-o", out, "--resume")
    assert out.read_bytes() == half
    # The right record, but the bytes held changed since.
    changed = half[:-10] + b"x" * 10
    cut_short(out, changed, tape, 0, tape.total_size)
    assert "changed since it was written" in fails(2, "play", shared, "-o", out, "--resume")
    assert out.read_bytes() == changed


def test_resume_of_a_complete_play_checks_it(
    shared: Path, shared_full: bytes, tmp_path: Path
) -> None:
    """Run again after it completed (no record left): every byte is compared with the tape;
    the same bytes exit 0 and change nothing, one byte off is refused (exit 2)."""
    out = tmp_path / "whole.tar"
    ok("play", shared, "-o", out, "--resume")
    done = run("play", shared, "-o", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert b"is complete" in done.stderr and out.read_bytes() == shared_full
    damaged = bytearray(shared_full)
    damaged[len(damaged) // 2] ^= 1
    out.write_bytes(bytes(damaged))
    said = fails(2, "play", shared, "-o", out, "--resume")
    assert f"differs from the tape at byte {len(damaged) // 2}" in said
    assert out.read_bytes() == bytes(damaged)


BAD_INPUT = {
    "unknown command": ["frobnicate"],
    "unknown option": ["play", "{src}", "--frob"],
    "missing folder (info)": ["info", "{missing}"],
    "missing folder (ls)": ["ls", "{missing}"],
    "missing folder (play)": ["play", "{missing}", "-o", "{out}"],
    "missing folder (record)": ["record", "{missing}"],
    "missing folder (verify)": ["verify", "{missing}"],
    "missing folder (send)": ["send", "{missing}", "127.0.0.1:9"],
    "missing folder (serve)": ["serve", "{missing}", "--port", "0"],
    "no tape": ["info", "{bare}"],
    "no tape (play)": ["play", "{bare}", "-o", "{out}"],
    "no tape (locate)": ["locate", "{bare}", "x"],
    "missing index": ["ls", "{src}", "--index", "{missing}"],
    "not an index": ["info", "{src}", "--index", "{src}/a.txt"],
    "negative offset": ["play", "{src}", "--offset", "-1"],
    "offset not a number": ["play", "{src}", "--offset", "ten"],
    "offset past the end": ["play", "{src}", "--offset", "99999999", "-o", "{out}"],
    "end before offset": ["play", "{src}", "--offset", "5000", "--end", "10", "-o", "{out}"],
    "bad size": ["locate", "{src}", "a.txt", "--volume-size", "5M"],
    "zero size": ["locate", "{src}", "a.txt", "--volume-size", "0"],
    "bad segment size": ["receive", "{out}", "--port", "0", "--segment-size", "lots"],
    "unknown path": ["locate", "{src}", "dataset/nope"],
    "bad address": ["send", "{src}", "nowhere"],
    "bad port": ["receive", "{out}", "--port", "70000"],
    "receive over a file": ["receive", "{src}/a.txt", "--port", "0"],
    "a file for a folder": ["record", "{src}/a.txt"],
    "a file for a folder (ls)": ["ls", "{src}/a.txt"],
}


def test_bad_input_exits_2_without_traceback(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    places = {
        "src": shared,
        "missing": tmp_path / "missing",
        "bare": tmp_path / "bare",
        "out": tmp_path / "out.tar",
    }
    # All at once: each is a process start, and they do not depend on one another.
    procs = {
        case: start(*[arg.format(**places) for arg in args]) for case, args in BAD_INPUT.items()
    }
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        err = stderr.decode()
        assert proc.returncode == 2, (case, proc.returncode, err)
        assert "Traceback" not in err and err.startswith("atartape"), (case, err)
        assert err.strip().count("\n") == 0, (case, err)
        assert stdout == b"", case
    assert not (tmp_path / "out.tar").exists()  # nothing written on bad input


def test_help_version_and_no_command() -> None:
    assert "receive" in ok("--help") and "--resume" in ok("play", "--help")
    assert ok("--version").startswith("atartape ")
    done = run()
    assert done.returncode == 2 and b"command is required" in done.stderr


def test_verify(recorded: Path) -> None:
    assert ok("verify", recorded, "--deep") == ""
    said = run("verify", recorded).stderr.decode()
    assert "checked every entry (10) and the index itself of 'dataset': all hold" in said
    said = run("verify", recorded, "--sample", "3").stderr.decode()
    assert "a canary sample: " in said and " of 10 entries" in said and "3 at random" in said
    write(recorded / "a.txt", "changed size\n")
    (recorded / "sub" / "deeper" / "c.txt").unlink()
    done = run("verify", recorded, "--deep")
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    problems = done.stdout.decode().splitlines()
    assert len(problems) == 3  # a.txt, c.txt and the folder that lost it
    assert any(p.startswith("dataset/a.txt: size:") for p in problems)
    assert any(p.startswith("dataset/sub/deeper/c.txt: missing:") for p in problems)
    assert done.stderr.decode().count("\n") == 1 and b"no longer match" in done.stderr


def test_play_of_changed_source_exits_1(recorded: Path, tmp_path: Path) -> None:
    write(recorded / "sub" / "big.bin", b"short")
    out = tmp_path / "out.tar"
    err = fails(1, "play", recorded, "-o", out)
    assert "integrity error" in err and "big.bin" in err
    data = out.read_bytes()  # what was written before stays: a truncated tar, never a wrong one
    assert len(data) > 0 and len(data) % 512 == 0


def test_locate(shared: Path, shared_full: bytes) -> None:
    where = json.loads(ok("locate", shared, "dataset/sub/big.bin", "--json"))
    first, last = map(int, where["range"].removeprefix("bytes=").split("-"))
    assert shared_full[first : last + 1] == (shared / "sub" / "big.bin").read_bytes()
    assert where["start_offset"] + 512 == where["data_offset"] == first
    text = ok("locate", shared, "sub/big.bin", "--volume-size", "256KiB")  # relative path
    assert f"range   bytes={first}-{last}" in text
    volumes = [line for line in text.splitlines() if line.startswith("volume ")]
    assert len(volumes) == last // (256 * 1024) - first // (256 * 1024) + 1 >= 3
    pieces = []
    for line in volumes:
        index, offset, length = map(int, re.findall(r"\d+", line)[:3])
        start = index * 256 * 1024 + offset
        pieces.append(shared_full[start : start + length])
    assert b"".join(pieces) == (shared / "sub" / "big.bin").read_bytes()


def _pty_stderr(*args: object) -> tuple[int, bytes, bytes]:
    """Run with stderr on a terminal (80x24); return the status, stdout and the terminal text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "atartape", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    out = proc.communicate(timeout=TIMEOUT)[0]
    seen = b""
    while select.select([master], [], [], 0.1)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return proc.returncode, out, seen


def test_progress_bar_only_on_a_terminal(shared: Path, shared_full: bytes, tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    out = tmp_path / "out.tar"
    code, stdout, terminal = _pty_stderr("play", shared, "-o", out)
    assert code == 0 and stdout == b"" and out.read_bytes() == shared_full
    assert b"dataset" in terminal and b"100%" in terminal  # the bar: label, bytes, rate
    assert re.search(rb"[0-9.]+[kKMG]?i?B/s", terminal), terminal
    # --quiet, global or per command: no bar even on a terminal.
    for args in (["-q", "play", shared, "-o", out], ["play", shared, "-o", out, "--quiet"]):
        code, stdout, terminal = _pty_stderr(*args)
        assert code == 0 and terminal == b"" and stdout == b""
    # stdout carries only the tar while the bar is drawn on the terminal.
    code, stdout, terminal = _pty_stderr("play", shared, "-o", "-")
    assert code == 0 and stdout == shared_full and b"100%" in terminal
    # stderr not a terminal: no bar.
    done = run("play", shared, "-o", out)
    assert done.returncode == 0 and done.stderr == b"" and done.stdout == b""


@pytest.fixture
def server_args(shared: Path) -> list[object]:
    return ["serve", shared, "--port", "0"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serve(backend: str, server_args: list[object], shared_full: bytes) -> None:
    proc = start(*server_args, "--backend", backend)
    try:
        line = wait_for_line(proc, r"on (http://127\.0\.0\.1:\d+/) .* safely: (http://\S+)")
        url, recording = line.group(1), line.group(2)
        response = httpx.get(url, timeout=TIMEOUT, follow_redirects=True)
        assert response.status_code == 200 and response.content == shared_full
        assert str(response.url) == recording  # the root redirects to the recording's URL
        partial = httpx.get(recording, headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
        assert partial.status_code == 206 and partial.content == shared_full[1000:]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


LISTENING = r"listening on 127\.0\.0\.1:(\d+)[\s\S]*--code ([0-9a-z-]{19})"


def listening(receiver: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The port and the code a receiver printed."""
    match = wait_for_line(receiver, LISTENING)
    return int(match.group(1)), match.group(2)


def test_send_receive(shared: Path, shared_full: bytes, tmp_path: Path) -> None:
    out = tmp_path / "got" / "dataset.tar"
    out.parent.mkdir()
    receiver = start(
        "--backend", "trio", "receive", out, "--host", "127.0.0.1", "--port", "0",
        "--segment-size", "64KiB",
    )  # fmt: skip
    try:
        port, code = listening(receiver)
        sent = ok("send", shared, f"127.0.0.1:{port}", "--code", code, "--backoff", "0.05")
        got, err = receiver.communicate(timeout=TIMEOUT)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0, err
    assert out.read_bytes() == shared_full
    digest = re.search(r"digest ([0-9a-f]{64})", sent)
    assert digest and digest.group(1) in got.decode()
    assert "received" in got.decode() and "sent 'dataset'" in sent
    # Done once: receiving to the same OUT again is refused (exit 2), the file is kept.
    err_text = fails(2, "receive", out, "--port", "0")
    assert "already exists" in err_text and out.read_bytes() == shared_full
    # No receiver: send gives up after its retries (exit 1).
    assert "gave up" in fails(1, "-q", "send", shared, f"127.0.0.1:{port}", "--code", code,
                              "--retries", "1", "--backoff", "0.01")  # fmt: skip


def test_transfer_refused_for_another_tape_exits_2(recorded: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "x.txt", "another tape")
    ok("record", other)
    out = tmp_path / "dataset.tar"
    # A partial of the first tape: the receiver is stopped while the sender is away.
    receiver = start("receive", out, "--host", "127.0.0.1", "--port", "0", "--segment-size", "1KiB")
    port, code = listening(receiver)
    sender = start("send", recorded, f"127.0.0.1:{port}", "--code", code)
    deadline = time.monotonic() + TIMEOUT
    part = Path(f"{out}.part")
    while not (part.exists() and part.stat().st_size >= 2048) and receiver.poll() is None:
        assert time.monotonic() < deadline, "no partial file appeared"
        time.sleep(0.01)
    sender.kill()
    receiver.send_signal(signal.SIGINT)
    sender.communicate(timeout=TIMEOUT)
    _, err = receiver.communicate(timeout=TIMEOUT)
    assert b"Traceback" not in err
    if receiver.returncode == 0:  # it finished before the signal: the race went the other way
        pytest.skip("the transfer completed before it could be interrupted")
    assert receiver.returncode == 130, err
    held = part.read_bytes()
    receiver = start("receive", out, "--host", "127.0.0.1", "--port", "0")
    try:
        port, again = listening(receiver)
        assert again == code  # the interrupted receive's code, kept in OUT.part.code
        assert "another tape" in fails(2, "send", other, f"127.0.0.1:{port}", "--code", code)
        _, err = receiver.communicate(timeout=TIMEOUT)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 2 and b"--force" in err and b"Traceback" not in err
    assert part.read_bytes() == held
    # --force discards it and receives the other tape.
    receiver = start("receive", out, "--host", "127.0.0.1", "--port", "0", "--force")
    try:
        port, code = listening(receiver)
        ok("send", other, f"127.0.0.1:{port}", "--code", code)
        receiver.communicate(timeout=TIMEOUT)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    assert receiver.returncode == 0
    assert out.read_bytes() == run("play", other).stdout


def test_a_file_given_as_the_folder_says_so(shared: Path) -> None:
    assert "is not a folder" in fails(2, "record", shared / "a.txt")
    assert "is not a folder" in fails(2, "info", shared / "a.txt")


def test_a_reader_that_leaves_early(shared: Path) -> None:
    """`ls | head` is a success; a tar cut short by its reader is not (141, as SIGPIPE)."""
    for command, expected in ((["ls"], 0), (["play", "-o", "-"], 141)):
        tail = " ".join(command[1:])
        shell = f"{sys.executable} -m atartape {command[0]} {shared} {tail} | head -c 10"
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {shell} > /dev/null; echo ${{PIPESTATUS[0]}}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.stdout.strip().splitlines()[-1] == str(expected), done.stderr
        assert "Traceback" not in done.stderr


def test_locate_takes_paths_on_disk_too(shared: Path) -> None:
    expected = json.loads(ok("locate", shared, "dataset/sub/big.bin", "--json"))
    for spelling in ("sub/big.bin", f"{shared}/sub/big.bin", "/dataset/sub/big.bin"):
        assert json.loads(ok("locate", shared, spelling, "--json")) == expected, spelling
    cwd = os.getcwd()
    os.chdir(shared.parent)
    try:
        assert json.loads(ok("locate", shared, "./dataset/sub/big.bin", "--json")) == expected
    finally:
        os.chdir(cwd)


def test_a_folder_whose_name_is_not_utf8(tmp_path: Path) -> None:
    root = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    write(root / "x.txt", "x")
    text = ok("record", root)
    assert "caf\\xe9" in text  # shown escaped, never a crash
    listed = ok("ls", root)
    assert "caf\\xe9/x.txt" in listed
    out = tmp_path / "out.tar"
    ok("play", root, "-o", out)
    with tarfile.open(out) as archive:
        assert os.fsencode(archive.getnames()[0]) == b"caf\xe9"


def test_index_problems_are_one_line(tmp_path: Path, dataset: Path) -> None:
    ok("record", dataset)
    index = dataset / ".tartape" / "index.db"
    # A damaged page: the index cannot be read.
    damaged = tmp_path / "damaged.db"
    data = bytearray(index.read_bytes())
    data[100:4096] = os.urandom(3996)
    damaged.write_bytes(bytes(data))
    assert "index" in fails(2, "ls", dataset, "--index", damaged)
    # Rows with bad values.
    bad = tmp_path / "bad.db"
    bad.write_bytes(index.read_bytes())
    with sqlite3.connect(bad) as conn:
        conn.execute("UPDATE entries SET kind = 'weird' WHERE start_offset = 512")
    conn.close()
    assert "bad values" in fails(2, "play", dataset, "--index", bad, "-o", tmp_path / "o.tar")
    # A missing meta key.
    nometa = tmp_path / "nometa.db"
    nometa.write_bytes(index.read_bytes())
    with sqlite3.connect(nometa) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'total_size'")
    conn.close()
    assert "lacks total_size" in fails(2, "info", dataset, "--index", nometa)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everything")
def test_unreadable_and_read_only_places(tmp_path: Path, dataset: Path) -> None:
    ok("record", dataset)
    index = dataset / ".tartape" / "index.db"
    index.chmod(0)
    try:
        assert "Permission denied" in fails(2, "info", dataset)
    finally:
        index.chmod(0o644)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = fails(2, "record", dataset, "--index", locked / "i.db")
        assert "--index" in err
    finally:
        locked.chmod(0o755)


def test_read_only_folder_names_the_remedy(tmp_path: Path) -> None:
    """A folder on a read-only mount (root cannot write there either)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    write(mount / "x.txt", "x")
    done = subprocess.run(["mount", "-o", "bind,ro", str(mount), str(mount)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot make a read-only bind mount here")
    try:
        err = fails(2, "record", mount)
        assert "--index" in err and "Read-only" in err
        ok("record", mount, "--index", tmp_path / "elsewhere.db")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_recording(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=False
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        root = tmp_path / "many"
        for i in range(3000):
            write(root / f"a-rather-long-file-name-{i:05d}.txt", "x")
        err = fails(1, "record", root, "--index", small / "i.db")
        assert "No space left" in err or "no space left" in err
        assert os.listdir(small) == []  # nothing half-written
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_play_to_a_pipe_widens_it(shared: Path, shared_full: bytes) -> None:
    """``play -o -`` into a pipe asks for a 1 MiB buffer (the default 64 KiB cost the CLI twice
    GNU tar's time through ``| cat``); the bytes are the same."""
    player = start("play", shared, "-o", "-")
    assert player.stdout is not None
    try:
        first = player.stdout.read(1)  # the play has begun: the pipe was widened before it
        size = fcntl.fcntl(player.stdout.fileno(), fcntl.F_GETPIPE_SZ)
        rest = player.stdout.read()
    finally:
        player.communicate(timeout=TIMEOUT)
    assert player.returncode == 0
    assert first + rest == shared_full
    assert size >= 1024 * 1024 or size == int(Path("/proc/sys/fs/pipe-max-size").read_text())
