"""The public surface: every export importable and shown as atartape's, every public module
with ``__all__``, the pure core importable alone, and no import cycle anywhere."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import grimp
import pytest

import atartape

PUBLIC_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(atartape.__path__, "atartape.")
    if not any(part.startswith("_") for part in info.name.split("."))
)
FRAMEWORKS = {"atartape.starlette": "starlette", "atartape.aiohttp": "aiohttp"}


def test_every_export_is_importable_and_named_atartape() -> None:
    assert sorted(atartape.__all__) == sorted(dir(atartape)) or set(atartape.__all__) <= set(
        dir(atartape)
    )
    for name in atartape.__all__:
        value = getattr(atartape, name)
        if name != "__version__":
            assert value.__module__ == "atartape", name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = atartape.nope  # type: ignore[attr-defined]


def test_exceptions_form_one_tree() -> None:
    errors = importlib.import_module("atartape.errors")
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, atartape.TarTapeError), name
        assert name in errors.__doc__, f"{name} is missing from the tree in the docstring"
    assert issubclass(atartape.InvalidOffsetError, ValueError)
    assert issubclass(atartape.EntryNotFoundError, KeyError)
    assert issubclass(atartape.TapeNotFoundError, FileNotFoundError)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_modules_declare_all(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.__all__ names {exported!r}, which is missing"


def test_aliases_of_the_old_names() -> None:
    assert atartape.TapePlayer.stream is atartape.TapePlayer.chunks  # bytes, as before
    assert atartape.TarTape.stream is atartape.TarTape.play  # events, as the first TarTape
    assert atartape.VerifyError is atartape.Difference
    assert not issubclass(atartape.Difference, BaseException)


@pytest.mark.parametrize(
    "module", ["atartape.format.header", "atartape.format.layout", "atartape.format.http"]
)
def test_the_format_core_imports_alone(module: str) -> None:
    """A fresh interpreter: importing the pure core loads no event loop and no SQLite."""
    code = (
        f"import sys, {module}\n"
        "loaded = [m for m in ('anyio', 'sqlite3', 'aiosqlite', 'asyncio', 'trio') "
        "if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_atartape_needs_only_anyio_and_aiosqlite() -> None:
    code = (
        "import sys, atartape\n"
        "tape = atartape.Tape\n"
        "heavy = [m for m in ('starlette', 'aiohttp', 'httpx', 'trio', 'uvicorn', 'hypercorn', "
        "'boto3', 'tqdm') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_import_cycles() -> None:
    """Counting imports inside functions and under TYPE_CHECKING (grimp sees both)."""
    graph = grimp.build_graph("atartape")
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if importer.startswith(imported + ".") or imported.startswith(importer + "."):
                continue  # a package and its own modules
            chain = graph.find_shortest_chain(importer=imported, imported=importer)
            if chain is not None:
                cycles.append(" -> ".join((importer, *chain)))
    assert cycles == []


def test_opening_a_tape_loads_no_player_and_no_transform() -> None:
    """Start-up: the command line, and a tape opened from Python, import neither the play
    machinery nor zstd and age (they load when a command plays or seals)."""
    code = (
        "import sys, atartape.cli.main, atartape.tape\n"
        "heavy = [m for m in ('atartape.player', 'atartape.recorder', 'atartape.transforms', "
        "'atartape.format.age', 'atartape.format.zstd_seekable', 'atartape._engine.producer', "
        "'atartape.transfer', 'atartape.s3', 'atartape.asgi', 'zstandard', 'cryptography') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
