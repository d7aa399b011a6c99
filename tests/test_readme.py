"""Every shell and Python block of README.md and docs/*.md runs as written.

Blocks run in order, each document in a folder of its own holding a small ``dataset/``, with
this interpreter's ``bin`` first on ``PATH`` (so ``atartape`` and ``python`` are the ones under
test). A comment just before a block says how to run it, when it needs more than that:

- ``<!-- test: skip: REASON -->``: not run (two machines, the set-up commands themselves);
- ``<!-- test: s3 -->``: run with the environment of a real S3 server on 127.0.0.1 (SeaweedFS)
  holding a bucket ``my-bucket``;
- ``<!-- test: file: NAME -->``: written to NAME and imported as a module (an app to serve);
- ``<!-- test: background: REGEX -->``: started in the background (a server) until the end of
  the document; the blocks after it run once its output matches REGEX.

``text`` blocks are output, not run. A block fails the test with its document and line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import write

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 180
RUN = {"python", "sh", "bash"}
_FENCE = re.compile(
    r"(?:<!-- test: (?P<directive>[^\n]*?) -->\n)?^```(?P<lang>[a-z]*)\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
NEEDS = {"age": "age", "age-keygen": "age", "zstd": "zstd", "wget": "wget", "curl": "curl"}


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    lang: str
    code: str
    directive: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    text = document.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code"))
        found.append(Block(document, line, match["lang"], match["code"], match["directive"] or ""))
    return found


def make_dataset(root: Path) -> None:
    write(root / "a.txt", "hello\n")
    write(root / "empty.bin", b"")
    write(root / "sub" / "big.bin", bytes(range(256)) * 3000)
    write(root / "sub" / "deeper" / "c.txt", "c" * 1000)
    (root / "empty_dir").mkdir()


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("ATARTAPE_DEBUG", None)
    env.update(extra or {})
    return env


def missing_tools(block: Block) -> list[str]:
    if block.lang not in ("sh", "bash"):
        return []
    words = set(re.findall(r"[\w-]+", block.code))
    return sorted({NEEDS[w] for w in words & NEEDS.keys() if shutil.which(w) is None})


class Document:
    """Runs one document's blocks in order, in one folder."""

    def __init__(self, folder: Path, s3_env: dict[str, str] | None) -> None:
        self.folder = folder
        self.s3_env = s3_env
        self.background: list[subprocess.Popen[bytes]] = []
        self.ran: list[str] = []

    def run(self, block: Block) -> None:
        directive = block.directive
        if directive.startswith("skip:"):
            return
        if directive == "s3" and self.s3_env is None:
            return
        tools = missing_tools(block)
        if tools:
            pytest.skip(f"{block.where} needs {', '.join(tools)}")
        if "import tartape" in block.code and importlib.util.find_spec("tartape") is None:
            return  # tartape 3 runs on Python 3.11 and later only
        env = environment(self.s3_env if directive == "s3" else None)
        if directive.startswith("file:"):
            self._module(block, directive.removeprefix("file:").strip(), env)
        elif directive.startswith("background:"):
            self._background(block, directive.removeprefix("background:").strip(), env)
        else:
            command = self._command(block)
            done = subprocess.run(
                command, cwd=self.folder, env=env, capture_output=True, timeout=TIMEOUT
            )
            assert done.returncode == 0, (
                f"{block.where} exited {done.returncode}\n--- stdout\n"
                f"{done.stdout.decode(errors='replace')[-3000:]}\n--- stderr\n"
                f"{done.stderr.decode(errors='replace')[-3000:]}"
            )
        self.ran.append(block.where)

    def _command(self, block: Block) -> list[str]:
        if block.lang == "python":
            return [sys.executable, "-c", block.code]
        return ["bash", "-e", "-o", "pipefail", "-c", block.code]

    def _module(self, block: Block, name: str, env: dict[str, str]) -> None:
        (self.folder / name).write_text(block.code, encoding="utf-8")
        module = Path(name).stem
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=self.folder,
            env=env,
            capture_output=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"{block.where}: {done.stderr.decode(errors='replace')}"

    def _background(self, block: Block, pattern: str, env: dict[str, str]) -> None:
        process = subprocess.Popen(
            self._command(block),
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.background.append(process)
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        seen = b""
        deadline = time.monotonic() + TIMEOUT
        while not re.search(pattern, seen.decode(errors="replace")):
            assert process.poll() is None, f"{block.where} ended: {seen.decode(errors='replace')}"
            assert time.monotonic() < deadline, f"{block.where} never said {pattern!r}: {seen!r}"
            chunk = process.stdout.read()
            if chunk:
                seen += chunk
            else:
                time.sleep(0.05)  # polling a server's output with a deadline

    def close(self) -> None:
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def document_folder(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "dataset")
    return tmp_path


def test_documents_have_runnable_blocks() -> None:
    """The parser sees the blocks (a broken fence would hide them all)."""
    found = blocks(ROOT / "README.md")
    assert len([b for b in found if b.lang in RUN]) >= 20
    directives = {b.directive.split(":")[0] for d in DOCUMENTS for b in blocks(d) if b.directive}
    assert directives <= {"skip", "s3", "file", "background"}, directives
    for document in DOCUMENTS:
        for block in blocks(document):
            if block.directive.startswith("skip"):
                assert block.directive.removeprefix("skip:").strip(), f"{block.where}: why?"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.name)
def test_every_block_runs(
    document: Path, document_folder: Path, request: pytest.FixtureRequest
) -> None:
    todo = [b for b in blocks(document) if b.lang in RUN]
    s3_env = None
    if any(b.directive == "s3" for b in todo):
        s3_env = _s3_environment(request)
    runner = Document(document_folder, s3_env)
    try:
        for block in todo:
            runner.run(block)
    finally:
        runner.close()
    expected = [
        b.where
        for b in todo
        if not b.directive.startswith("skip:")
        and (b.directive != "s3" or s3_env is not None)
        and not ("import tartape" in b.code and importlib.util.find_spec("tartape") is None)
    ]
    assert runner.ran == expected  # nothing left out quietly


def _s3_environment(request: pytest.FixtureRequest) -> dict[str, str] | None:
    """The environment of the session's S3 server with a bucket ``my-bucket``; ``None`` (those
    blocks are not run) where the server cannot run here."""
    try:
        server = request.getfixturevalue("s3_server")
    except pytest.skip.Exception:
        return None
    client = server.client()
    try:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if "my-bucket" not in existing:
            client.create_bucket(Bucket="my-bucket")
    finally:
        client.close()
    return dict(server.environ)
