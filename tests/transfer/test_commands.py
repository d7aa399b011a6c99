"""``atartape send`` and ``atartape receive`` as users run them (subprocesses, 127.0.0.1)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from atartape.cli.transfer import _send_command
from atartape.transfer.partfile import PartFile
from tests.transfer.support import make_tree

TIMEOUT = 60
COMMAND = re.compile(r"  atartape send FOLDER 127\.0\.0\.1:(\d+) --code ([0-9a-z-]{19})\n")


def atartape(*args: object) -> list[str]:
    return [sys.executable, "-m", "atartape", *map(str, args)]


def run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        atartape(*args), capture_output=True, timeout=TIMEOUT, env=env, check=False
    )


def one_line_error(done: subprocess.CompletedProcess[bytes], status: int) -> str:
    err = done.stderr.decode()
    assert done.returncode == status, (done.returncode, err)
    assert err.startswith("atartape") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    return err


class Receiver:
    """``atartape receive`` running; ``port`` and ``code`` read from what it prints."""

    def __init__(self, *args: object) -> None:
        self.proc = subprocess.Popen(
            atartape("receive", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.seen = b""
        match = self.wait_for(COMMAND)
        self.port, self.code = int(match.group(1)), match.group(2)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            match = pattern.search(self.seen.decode(errors="replace"))
            if match:
                return match
            if select.select([self.proc.stderr], [], [], 0.5)[0]:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                self.seen += chunk
        raise AssertionError(f"no {pattern.pattern!r} in {self.seen!r}")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out.decode(), (self.seen + err).decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "tree", seed=6)
    subprocess.run(atartape("record", root), check=True, capture_output=True, timeout=TIMEOUT)
    return root


def on_a_terminal(*args: object, env: dict[str, str]) -> tuple[int, bytes]:
    """Run with stderr on a terminal (80x24); return the status and the terminal's text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(atartape(*args), stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    while True:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=TIMEOUT), seen


def test_send_with_the_printed_code(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "got" / "tree.tar"
    out.parent.mkdir()
    receiver = Receiver(out, "--host", "127.0.0.1", "--port", "0", "--segment-size", "64KiB")
    try:
        where = f"127.0.0.1:{receiver.port}"
        assert f"listening on {where}" in receiver.seen.decode()
        # Refused, each with one line and status 2; the receiver goes on.
        err = one_line_error(run("send", folder, where, "--code", "t3st-c0de-0000-0001"), 2)
        assert "refused: wrong code" in err
        err = one_line_error(run("send", folder, where), 2)
        assert "--code CODE" in err and "ATARTAPE_CODE" in err
        err = one_line_error(run("send", folder, where, "--insecure"), 2)
        assert "requires TLS" in err
        err = one_line_error(run("send", folder, where, "--code", "nope"), 2)
        assert "bad code" in err
        assert receiver.proc.poll() is None
        # The code from the environment (not shown by ps), a progress bar on the terminal.
        env = {**os.environ, "ATARTAPE_CODE": receiver.code}
        status, terminal = on_a_terminal("send", folder, where, env=env)
        assert status == 0, terminal
        assert b"send tree" in terminal and b"100%" in terminal
        code, stdout, stderr = receiver.finish()
    finally:
        receiver.stop()
    assert code == 0, stderr
    assert "received" in stdout and "wrong code" in stderr
    played = subprocess.run(atartape("play", folder), capture_output=True, timeout=TIMEOUT)
    assert out.read_bytes() == played.stdout
    assert not Path(f"{out}.part.code").exists()


def test_a_restarted_receiver_takes_its_code_back(tmp_path: Path) -> None:
    out = tmp_path / "tree.tar"
    receiver = Receiver(out, "--host", "127.0.0.1", "--port", "0")
    receiver.proc.send_signal(signal.SIGINT)
    status, _, _ = receiver.finish()
    assert status == 130
    again = Receiver(out, "--host", "127.0.0.1", "--port", "0")
    try:
        assert again.code == receiver.code
        assert "taking the code of the interrupted receive" in again.seen.decode()
    finally:
        again.stop()
    chosen = Receiver(out, "--host", "127.0.0.1", "--port", "0", "--code", "T3ST C0DE 0000 0001")
    chosen.stop()
    assert chosen.code == "t3st-c0de-0000-0001"


def test_receive_listens_everywhere_by_default_and_says_so() -> None:
    text = run("receive", "--help").stdout.decode()
    assert "0.0.0.0" in text and "8273" in text
    command = _send_command("0.0.0.0", 8273, "t3st-c0de-0000-0001")
    assert command == f"atartape send FOLDER {socket.gethostname()}:8273 --code t3st-c0de-0000-0001"
    assert _send_command("::1", 9, None) == "atartape send FOLDER [::1]:9 --insecure"


def test_a_full_disk_ends_both_sides_with_status_1(folder: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        receiver = Receiver(tiny / "tree.tar", "--host", "127.0.0.1", "--port", "0")
        try:
            sent = run("send", folder, f"127.0.0.1:{receiver.port}", "--code", receiver.code)
            status, _, stderr = receiver.finish()
        finally:
            receiver.stop()
        err = one_line_error(sent, 1)
        assert "No space left on device" in err and "gave up" not in err  # no retry
        assert status == 1 and "No space left on device" in stderr.splitlines()[-1]
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def forge_partial(out: Path, folder: Path, segments: int, identity: str | None = None) -> None:
    """Leave ``OUT.part`` as a receiver stopped after ``segments`` checked segments of 64 KiB
    leaves it (the receiver's own code writes it; ``identity``: of another recording)."""
    info = json.loads(run("info", folder, "--json").stdout)
    data = run("play", folder).stdout
    partial = PartFile(
        str(out), info["fingerprint"], identity or info["identity"], info["total_size"], 65536
    )
    partial.create()
    for index in range(segments):
        segment = data[index * 65536 : (index + 1) * 65536]
        partial.append(memoryview(segment))
        partial.seal(index, hashlib.sha256(segment).digest())
    partial.close()


def held(out: Path) -> list[bytes]:
    return [Path(f"{out}{suffix}").read_bytes() for suffix in (".part", ".part.state")]


@pytest.mark.parametrize("case", ["damaged", "another recording", "wrong code"])
def test_a_refused_sender_exits_2_with_the_receivers_reason(
    folder: Path, tmp_path: Path, case: str
) -> None:
    out = tmp_path / "tree.tar"
    forge_partial(out, folder, 3, identity="0" * 64 if case == "another recording" else None)
    if case == "damaged":
        with open(f"{out}.part", "r+b") as part:
            part.seek(65536 + 99)
            byte = part.read(1)
            part.seek(65536 + 99)
            part.write(bytes([byte[0] ^ 1]))
    before = held(out)
    receiver = Receiver(out, "--host", "127.0.0.1", "--port", "0", "--segment-size", "64KiB")
    try:
        where = f"127.0.0.1:{receiver.port}"
        code = "t3st-c0de-0000-0001" if case == "wrong code" else receiver.code
        # A refusal is not retried: with a long backoff, a retry would outlast the timeout.
        sent = run("send", folder, where, "--code", code, "--backoff", "1000")
        err = one_line_error(sent, 2)
        if case == "wrong code":
            assert f"the receiver at {where} refused: wrong code" in err
            assert receiver.proc.poll() is None  # it waits for the right sender
            receiver.stop()
            status, stderr = None, ""
        else:
            status, _, stderr = receiver.finish()
    finally:
        receiver.stop()
    part = f"{out}.part"
    if case == "damaged":
        assert f"the receiver refused: its partial file {part} is damaged at byte 65536: " in err
        assert "--force" in err
    elif case == "another recording":
        assert (
            f"the receiver refused: its partial file {part} holds 196608 bytes of another " in err
        )
        assert "recording of 'tree'" in err
    if status is not None:
        assert status == 2, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("atartape receive: ") and "the sender at 127.0.0.1:" in last, stderr
        assert "pass force (--force) to discard it" in last
    assert held(out) == before
