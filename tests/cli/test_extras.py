"""A missing optional dependency: every command that needs an extra exits 2 with one line naming
what to install (``pip install 'atartape[zstd]'``), and the library raises
:class:`~atartape.MissingDependencyError` (an ``ImportError`` and a ``TarTapeError``).

Each case runs in a subprocess whose ``sys.modules`` hides the module (``None`` there makes
every import of it fail, as if it were not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atartape.format import age
from tests.helpers import write

TIMEOUT = 60


def run_without(hidden: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({hidden!r})); "
        f"from atartape.cli import main; sys.exit(main({argv!r}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extras") / "ds"
    write(root / "a.txt", "hello\n")
    write(root / "sub" / "b.bin", bytes(range(256)) * 40)
    return root


@pytest.fixture(scope="module")
def recorded(folder: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "atartape", "-q", "record", str(folder)],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert done.returncode == 0
    return folder


RECIPIENT = str(age.X25519Identity.generate().recipient)


@pytest.mark.parametrize(
    ("hidden", "args", "line"),
    [
        (
            ["zstandard"],
            ["--zstd"],
            "a zstd view needs zstandard, which is not installed: pip install 'atartape[zstd]'",
        ),
        (
            ["cryptography"],
            ["--zstd"],
            "a zstd view (its frame tags) needs cryptography, which is not installed: "
            "pip install 'atartape[zstd]'",
        ),
        (
            ["cryptography"],
            ["--age-recipient", RECIPIENT],
            "an age-sealed view needs cryptography, which is not installed: "
            "pip install 'atartape[age]'",
        ),
    ],
    ids=["zstd-zstandard", "zstd-cryptography", "age-cryptography"],
)
def test_record_a_view_without_its_extra(
    folder: Path, tmp_path: Path, hidden: list[str], args: list[str], line: str
) -> None:
    index = tmp_path / "index.db"
    done = run_without(hidden, ["record", str(folder), "--index", str(index), *args])
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"atartape record: {line}"]
    assert list(tmp_path.iterdir()) == []  # no index, no key, no temporary file left


def test_receive_without_cryptography(tmp_path: Path) -> None:
    out = tmp_path / "got.tar"
    done = run_without(["cryptography"], ["receive", str(out), "--port", "0"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "atartape receive: a transfer over TLS needs cryptography, which is not installed: "
        "pip install 'atartape[transfer]' (or use --insecure on a trusted network)"
    )
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("hidden", "argv", "line"),
    [
        (
            ["uvicorn"],
            ["serve", "{src}", "--port", "0"],
            "atartape serve: serve needs uvicorn, which is not installed: "
            "pip install 'atartape[serve]'",
        ),
        (
            ["hypercorn"],
            ["--backend", "trio", "serve", "{src}", "--port", "0"],
            "atartape serve: serve --backend trio needs hypercorn, which is not installed: "
            "pip install 'atartape[serve]'",
        ),
        (
            ["boto3"],
            ["upload", "{src}", "s3://bucket/ds.tar", "--endpoint-url", "http://127.0.0.1:9"],
            "atartape upload: atartape.s3 needs boto3, which is not installed: "
            "pip install 'atartape[s3]'",
        ),
        (
            ["trio"],
            ["--backend", "trio", "ls", "{src}"],
            "atartape ls: --backend trio needs trio, which is not installed: "
            "pip install 'atartape[trio]'",
        ),
    ],
    ids=["serve-uvicorn", "serve-hypercorn", "upload-boto3", "backend-trio"],
)
def test_commands_without_their_extra(
    recorded: Path, hidden: list[str], argv: list[str], line: str
) -> None:
    done = run_without(hidden, [arg.format(src=recorded) for arg in argv])
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [line]


@pytest.mark.parametrize(
    ("module", "extra"), [("atartape.starlette", "starlette"), ("atartape.aiohttp", "aiohttp")]
)
def test_framework_edges_say_what_to_install(module: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{extra!r}] = None\n"
        "import atartape\n"
        "try:\n"
        f"    import {module}\n"
        "except atartape.MissingDependencyError as exc:\n"
        "    assert isinstance(exc, ImportError) and exc.extra == " + repr(extra) + "\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{module} needs {extra}, which is not installed: pip install 'atartape[{extra}]'"
    )


def test_the_library_raises_one_error_for_a_missing_extra() -> None:
    """Python callers catch ``MissingDependencyError`` (or ``ImportError``), never a bare
    ``ModuleNotFoundError`` from inside a view."""
    code = (
        "import sys; sys.modules['zstandard'] = None\n"
        "import atartape\n"
        "from atartape.format import zstd_seekable\n"
        "try:\n"
        "    zstd_seekable.FrameParams.current(3, checksum=True)\n"
        "except atartape.MissingDependencyError as exc:\n"
        "    assert isinstance(exc, (ImportError, atartape.TarTapeError))\n"
        "    print(exc.name, exc.extra)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["zstandard", "zstd"]
