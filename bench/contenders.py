"""The command lines of the contenders, group by group. Each contender is a whole process."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from measure import Contender

BENCH = Path(__file__).resolve().parent
WORKERS = BENCH / "workers"
PARALLEL_FLOORS = (1, 4, 8, 16)


@dataclass(frozen=True)
class Tools:
    """The interpreters and programs the contenders run with."""

    python: str  # the runner's interpreter, where atartape is installed
    sh: str
    atartape: bool  # whether ``import atartape`` works in ``python``
    tartape_python: str | None  # tartape's own virtual environment, if it could be made
    atartape_cli: tuple[str, ...] = ()  # the ``atartape`` command (or python -m atartape)
    curl: str | None = None


@dataclass(frozen=True)
class Tree:
    """A recorded folder: its path, its atartape index and its tartape catalog."""

    source: Path
    index: Path
    catalog: Path


def _worker(python: str, name: str, *args: str | Path) -> list[str]:
    return [python, str(WORKERS / name), *(str(a) for a in args)]


def _sh(tools: Tools, command: str) -> list[str]:
    return [tools.sh, "-c", command]


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def atartape_stream(
    tools: Tools, index: Path, source: Path, *extra: str, name: str, label: str
) -> Contender:
    argv = _worker(tools.python, "atartape_stream.py", "--index", index, "--source", source)
    return Contender(name, label, argv + list(extra))


def gnu_tar_pipe(tools: Tools, source: Path) -> list[str]:
    parent, name = _q(source.parent), _q(source.name)
    return _sh(tools, f"tar -cf - -C {parent} {name} | cat > /dev/null")


def atartape_cli_pipe(tools: Tools, tree: Tree) -> list[str]:
    cli = " ".join(_q(x) for x in tools.atartape_cli)
    play = f"{cli} play {_q(tree.source)} --index {_q(tree.index)} -o -"
    return _sh(tools, f"{play} | cat > /dev/null")


def floors(tools: Tools, source: Path, threads: tuple[int, ...]) -> list[Contender]:
    return [
        Contender(
            f"floor-par-{n}",
            f"parallel read floor, {n} thread{'s' if n > 1 else ''} (1 MiB reads)",
            _worker(tools.python, "floor.py", "--source", source, "--threads", str(n)),
        )
        for n in threads
    ]


def stream_group(
    tools: Tools,
    tree: Tree,
    out_dir: Path,
    sleepy: bool = False,
    parallel: tuple[int, ...] = (),
) -> list[Contender]:
    """Everything that turns ``tree`` into a TAR stream (or just reads it), warm.

    ``out_dir`` holds the files of the CLI-to-a-file pair (removed before each run).
    """
    source = tree.source
    out: list[Contender] = []
    if tools.atartape:

        def a(name: str, label: str, *extra: str) -> Contender:
            return atartape_stream(tools, tree.index, source, *extra, name=name, label=label)

        out += [
            a("atartape-asyncio", "atartape chunks() asyncio", "--backend", "asyncio"),
            a("atartape-trio", "atartape chunks() trio", "--backend", "trio"),
            a("atartape-uvloop", "atartape chunks() asyncio+uvloop", "--backend", "uvloop"),
            a("atartape-play", "atartape play() md5 off", "--mode", "play"),
            a("atartape-play-md5", "atartape play() md5 on", "--mode", "play", "--md5"),
        ]
        if sleepy:
            label = "atartape chunks(), consumer sleeps 1 ms / 100 chunks"
            out.append(a("atartape-sleepy", label, "--sleep-every", "100"))
    if tools.tartape_python:
        argv = _worker(
            tools.tartape_python,
            "tartape_worker.py",
            "stream",
            "--source",
            source,
            "--catalog",
            tree.catalog,
        )
        out.append(Contender("tartape", "tartape 3.0.3 play()", argv))
    out.append(Contender("gnu-tar", "GNU tar -cf - | cat", gnu_tar_pipe(tools, source)))
    if tools.atartape:
        label = "atartape play -o - | cat (CLI)"
        out.append(Contender("atartape-cli-pipe", label, atartape_cli_pipe(tools, tree)))
        target = out_dir / f"{source.name}.atartape.tar"
        cli = [*tools.atartape_cli, "play", str(source), "--index", str(tree.index)]
        label = "atartape play -o FILE (CLI, fsyncs)"
        out.append(
            Contender("atartape-cli-file", label, [*cli, "-o", str(target)], None, (target,))
        )
    target = out_dir / f"{source.name}.gnu.tar"
    tar = f"tar -cf {_q(target)} -C {_q(source.parent)} {_q(source.name)} && sync {_q(target)}"
    label = "GNU tar -cf FILE && sync FILE"
    out.append(Contender("gnu-tar-file", label, _sh(tools, tar), None, (target,)))
    out += [
        Contender(
            "tarfile",
            "Python tarfile mode w|",
            _worker(tools.python, "tarfile_stream.py", "--source", source),
        ),
        Contender(
            "floor",
            "floor: read files (128 KiB buffer)",
            _worker(tools.python, "floor.py", "--source", source),
        ),
        Contender(
            "hashlib-floor",
            "floor + hashlib md5",
            _worker(tools.python, "floor.py", "--source", source, "--md5"),
        ),
    ]
    out += floors(tools, source, parallel)
    return out


def cold_group(tools: Tools, tree: Tree, prime: Tree) -> list[Contender]:
    """The cold contenders: each primed, after the caches are dropped, on the tiny tree."""

    def build(t: Tree) -> list[Contender]:
        out: list[Contender] = []
        if tools.atartape:
            label = "atartape chunks() asyncio"
            out.append(
                atartape_stream(tools, t.index, t.source, name="atartape-asyncio", label=label)
            )
            label = "atartape play -o - | cat (CLI)"
            out.append(Contender("atartape-cli-pipe", label, atartape_cli_pipe(tools, t)))
        out.append(Contender("gnu-tar", "GNU tar -cf - | cat", gnu_tar_pipe(tools, t.source)))
        return out + floors(tools, t.source, PARALLEL_FLOORS)

    return _primed(build(tree), build(prime))


def _primed(contenders: list[Contender], primes: list[Contender]) -> list[Contender]:
    by_name = {p.name: p.argv for p in primes}
    return [Contender(c.name, c.label, c.argv, by_name[c.name], c.outputs) for c in contenders]


def find_argv(tools: Tools, source: Path) -> list[str]:
    return _sh(tools, f"find {_q(source)} -printf '%s %T@\\n' > /dev/null")


def record_group(tools: Tools, source: Path, out_dir: Path) -> list[Contender]:
    """Recording ``source`` into a fresh index, with atartape and with tartape; and find."""
    out: list[Contender] = []
    if tools.atartape:
        argv = _worker(
            tools.python,
            "atartape_record.py",
            "--source",
            source,
            "--index",
            out_dir / "record-atartape.db",
        )
        out.append(Contender("atartape-record", "atartape.record()", argv))
    if tools.tartape_python:
        argv = _worker(
            tools.tartape_python,
            "tartape_worker.py",
            "record",
            "--source",
            source,
            "--catalog",
            out_dir / "record-tartape.tartape",
        )
        out.append(Contender("tartape-record", "tartape.record()", argv))
    out.append(
        Contender("find", "find SRC -printf '%s %T@\\n' > /dev/null", find_argv(tools, source))
    )
    return out


def cold_record_group(tools: Tools, source: Path, prime: Path, out_dir: Path) -> list[Contender]:
    """Recording ``source`` cold with atartape, against listing it cold with find."""

    def build(src: Path, tag: str) -> list[Contender]:
        out: list[Contender] = []
        if tools.atartape:
            index = out_dir / f"record-cold{tag}.db"
            argv = _worker(tools.python, "atartape_record.py", "--source", src, "--index", index)
            out.append(Contender("atartape-record", "atartape.record()", argv))
        label = "find SRC -printf '%s %T@\\n' > /dev/null"
        out.append(Contender("find", label, find_argv(tools, src)))
        return out

    return _primed(build(source, ""), build(prime, "-prime"))


def ttfb_contender(tools: Tools, name: str, label: str, index: Path, source: Path) -> Contender:
    argv = _worker(tools.python, "atartape_ttfb.py", "--index", index, "--source", source)
    return Contender(name, label, argv)


def curl_contender(tools: Tools, name: str, label: str, url: str) -> Contender:
    """curl fetching ``url`` to /dev/null; it prints its own figures as one JSON line."""
    assert tools.curl is not None
    argv = [tools.curl, "-s", "-S", "-f", "-L", "-o", "/dev/null", "-w", "%{json}\\n", url]
    return Contender(name, label, argv)


@dataclass(frozen=True)
class ViewTree:
    """A folder recorded twice with views, and its plain tape written once to a file.

    ``sealed``: recorded with ``seal`` (views plain and age); ``packed``: with ``compress``
    and ``seal`` (views plain, zstd and zstd+age). ``level`` and ``frame_size`` are those
    the zstd view was recorded with, which the compression floor uses too.
    """

    source: Path
    sealed: Path
    packed: Path
    tape_file: Path
    level: int
    frame_size: int


def views_group(tools: Tools, tree: ViewTree, digests: bool = True) -> list[Contender]:
    """atartape streaming each view in process, and the floors: sealing and compressing the
    plain tape file in one thread (``digests``: also with the digests the views check)."""
    out: list[Contender] = []

    def view(name: str, index: Path, which: str) -> Contender:
        label = f"atartape chunks(), {which} view"
        argv = _worker(tools.python, "atartape_stream.py", "--index", index, "--source")
        return Contender(name, label, [*argv, str(tree.source), "--view", which])

    if tools.atartape:
        out += [
            view("view-plain", tree.sealed, "plain"),
            view("view-age", tree.sealed, "age"),
            view("view-zstd", tree.packed, "zstd"),
            view("view-zstd-age", tree.packed, "zstd+age"),
        ]

    def floor(name: str, label: str, *args: str) -> Contender:
        argv = _worker(tools.python, "view_floor.py", "--tape", tree.tape_file, *args)
        return Contender(name, label, argv)

    zstd = ("--compress", "--level", str(tree.level), "--frame-size", str(tree.frame_size))
    frames = f"{tree.frame_size // (1024 * 1024)} MiB frames, level {tree.level}"
    out += [
        floor("floor-seal", "floor: ChaCha20-Poly1305, 64 KiB chunks, one thread", "--seal"),
        floor("floor-zstd", f"floor: zstd of the same {frames}, one thread", *zstd),
    ]
    if digests:
        out += [
            floor(
                "floor-seal-digest",
                "floor: ChaCha20-Poly1305 + digest of the tags per 1 MiB",
                "--seal",
                "--digest",
            ),
            floor(
                "floor-zstd-digest", "floor: zstd frames + Poly1305 per frame", *zstd, "--digest"
            ),
        ]
    return out
