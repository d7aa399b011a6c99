"""The benchmark's data sets: built once under the cache folder, reused while present.

Each set is built into a temporary folder beside its final place and renamed into place, then
marked done, so an interrupted build is started again rather than used half made. Building keeps
memory small (1 MiB at a time): the runner's peak RSS is inherited by the children it spawns.
"""

from __future__ import annotations

import compileall
import os
import random
import shutil
import stat
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# A fixed mtime makes the trees, and so the tapes, the same on every build.
FIXED_MTIME = 1_700_000_000


def human(n: int) -> str:
    """A size in GiB or MiB, as short as it goes: ``20 GiB``, ``1.25 GiB``, ``64 MiB``."""
    return f"{n / GIB:g} GiB" if n >= GIB else f"{n / MIB:g} MiB"


@dataclass(frozen=True)
class Sizes:
    """How big the sets are in one mode (full or --quick)."""

    small_files: int
    small_dirs: int
    large_files: int
    large_size: int
    sparse_small: int
    sparse_big: int
    synthetic_entries: int
    http_size: int  # the HTTP group's tape: 4 files of http_size / 4
    stdlib_subset: tuple[str, ...] = ()  # only these top-level entries of the stdlib (quick)


FULL = Sizes(
    small_files=20_000,
    small_dirs=200,
    large_files=4,
    large_size=256 * MIB,
    sparse_small=1 * GIB,
    sparse_big=20 * GIB,
    synthetic_entries=1_000_000,
    http_size=512 * MIB,
)
QUICK = Sizes(
    small_files=2_000,
    small_dirs=20,
    large_files=4,
    large_size=16 * MIB,
    sparse_small=64 * MIB,
    sparse_big=1280 * MIB,
    synthetic_entries=10_000,
    http_size=64 * MIB,
    stdlib_subset=("asyncio", "email", "encodings", "json", "xml"),
)


@dataclass(frozen=True)
class DataSet:
    """A folder to tape, and what it holds."""

    name: str
    path: Path
    description: str

    def stats(self) -> tuple[int, int]:
        """Return (regular files, bytes of content) of the tree, symlinks not followed."""
        files = 0
        total = 0
        for root, _dirs, names in os.walk(self.path):
            for name in names:
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    files += 1
                    total += st.st_size
        return files, total


def _write_random(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(MIB, left)
            f.write(rng.randbytes(n))
            left -= n


def _fix_mtimes(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def build_small(dest: Path, files: int, dirs: int) -> None:
    """``files`` files of 0-4 KiB spread over ``dirs`` folders, from a seeded RNG."""
    rng = random.Random(20_000)
    for d in range(dirs):
        (dest / f"d{d:03d}").mkdir()
    for i in range(files):
        size = rng.randint(0, 4 * KIB)
        (dest / f"d{i % dirs:03d}" / f"f{i:05d}.bin").write_bytes(rng.randbytes(size))
    _fix_mtimes(dest)


def build_large(dest: Path, files: int, size: int) -> None:
    """``files`` files of ``size`` bytes of seeded random content."""
    rng = random.Random(256)
    for i in range(files):
        _write_random(dest / f"large{i}.bin", size, rng)
    _fix_mtimes(dest)


def build_real(dest: Path) -> None:
    """A copy of the running interpreter's standard library, without caches and site-packages."""
    dest.rmdir()
    shutil.copytree(
        sysconfig.get_paths()["stdlib"],
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__", "site-packages"),
    )


def build_stdlib(dest: Path, subset: tuple[str, ...] = ()) -> None:
    """The running interpreter's standard library with its ``__pycache__`` (no site-packages).

    If the installed tree has no bytecode, the copy is compiled with compileall. ``subset``
    keeps only those top-level entries (the --quick set).
    """
    src = Path(sysconfig.get_paths()["stdlib"])
    keep = set(subset)

    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == src:
            return [n for n in names if n == "site-packages" or (keep and n not in keep)]
        return []

    dest.rmdir()
    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    if not any(dest.rglob("__pycache__")):
        compileall.compile_dir(dest, quiet=1, workers=0)


def build_prime(dest: Path) -> None:
    """A tiny tree the cold groups run every contender on after dropping the caches, so that
    the programs (interpreter, modules, tar) are loaded again but the measured data is not."""
    (dest / "d").mkdir()
    (dest / "d" / "f.bin").write_bytes(b"prime" * 100)
    _fix_mtimes(dest)


def build_sparse(dest: Path, size: int) -> None:
    """One sparse file of ``size`` bytes (all holes: reading it returns zeros)."""
    with open(dest / "sparse.bin", "wb") as f:
        f.truncate(size)
    _fix_mtimes(dest)


def ensure(path: Path, build: Callable[[Path], None], label: str) -> Path:
    """Build ``path`` with ``build`` unless a finished build is already there."""
    done = path.with_name(path.name + ".done")
    if done.exists() and path.is_dir():
        return path
    print(f"  building data set {label} at {path} ...", flush=True)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    tmp.rename(path)
    done.touch()
    return path


def dataset(base: Path, sizes: Sizes, name: str) -> DataSet:
    """The named set under ``base`` (``base/<mode>``), built on first use."""
    s = sizes
    if name == "small":
        path = ensure(base / "small", lambda p: build_small(p, s.small_files, s.small_dirs), name)
        desc = f"{s.small_files:,} files of 0-4 KiB in {s.small_dirs} folders"
    elif name == "large":
        path = ensure(base / "large", lambda p: build_large(p, s.large_files, s.large_size), name)
        desc = f"{s.large_files} files of {human(s.large_size)}"
    elif name == "real":
        # One copy serves both modes: it is the same tree either way.
        path = ensure(base.parent / "real", build_real, name)
        desc = "copy of the Python standard library, no __pycache__"
    elif name == "stdlib":
        if s.stdlib_subset:
            path = ensure(
                base / "stdlib", lambda p: build_stdlib(p, s.stdlib_subset), "stdlib (quick)"
            )
            desc = f"Python standard library with __pycache__: {', '.join(s.stdlib_subset)}"
        else:
            # One copy serves every full run: it is the same tree each time.
            path = ensure(base.parent / "stdlib", build_stdlib, name)
            desc = "the Python standard library with its __pycache__"
    elif name == "http":
        each = s.http_size // 4
        path = ensure(base / f"http-{s.http_size // MIB}m", lambda p: build_large(p, 4, each), name)
        desc = f"4 files of {human(each)}"
    elif name == "prime":
        path = ensure(base.parent / "prime", build_prime, name)
        desc = "one tiny file (primes the programs of a cold run)"
    elif name in ("sparse-small", "sparse-big"):
        size = s.sparse_small if name == "sparse-small" else s.sparse_big
        path = ensure(base / f"sparse-{size // MIB}m", lambda p: build_sparse(p, size), name)
        desc = f"one sparse file of {human(size)}"
    else:
        raise ValueError(f"unknown data set {name!r}")
    return DataSet(name=name, path=path, description=desc)
