"""The command lines of the contenders, group by group. Each contender is a whole process."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from measure import Contender

BENCH = Path(__file__).resolve().parent
WORKERS = BENCH / "workers"


@dataclass(frozen=True)
class Tools:
    """The interpreters and programs the contenders run with."""

    python: str  # the runner's interpreter, where atartape is installed
    sh: str
    atartape: bool  # whether ``import atartape`` works in ``python``
    tartape_python: str | None  # tartape's own virtual environment, if it could be made


def _worker(python: str, name: str, *args: str | Path) -> list[str]:
    return [python, str(WORKERS / name), *(str(a) for a in args)]


def atartape_stream(
    tools: Tools, index: Path, source: Path, *extra: str, name: str, label: str
) -> Contender:
    argv = _worker(tools.python, "atartape_stream.py", "--index", index, "--source", source)
    return Contender(name, label, argv + list(extra))


def stream_group(
    tools: Tools, source: Path, index: Path, catalog: Path, sleepy: bool = False
) -> list[Contender]:
    """Everything that turns ``source`` into a TAR stream (or just reads it) to /dev/null."""
    out: list[Contender] = []
    if tools.atartape:

        def a(name: str, label: str, *extra: str) -> Contender:
            return atartape_stream(tools, index, source, *extra, name=name, label=label)

        out += [
            a("atartape-asyncio", "atartape stream() asyncio", "--backend", "asyncio"),
            a("atartape-trio", "atartape stream() trio", "--backend", "trio"),
            a("atartape-uvloop", "atartape stream() asyncio+uvloop", "--backend", "uvloop"),
            a("atartape-play", "atartape play() md5 off", "--mode", "play"),
            a("atartape-play-md5", "atartape play() md5 on", "--mode", "play", "--md5"),
        ]
        if sleepy:
            label = "atartape stream(), consumer sleeps 1 ms / 100 chunks"
            out.append(a("atartape-sleepy", label, "--sleep-every", "100"))
    if tools.tartape_python:
        argv = _worker(
            tools.tartape_python,
            "tartape_worker.py",
            "stream",
            "--source",
            source,
            "--catalog",
            catalog,
        )
        out.append(Contender("tartape", "tartape 3.0.3 play()", argv))
    tar = f"tar -C {shlex.quote(str(source))} -cf - . | cat > /dev/null"
    out += [
        Contender("gnu-tar", "GNU tar -cf - | cat", [tools.sh, "-c", tar]),
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
    return out


def record_group(tools: Tools, source: Path, out_dir: Path) -> list[Contender]:
    """Recording ``source`` into a fresh index, with atartape and with tartape."""
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
    return out


def ttfb_contender(tools: Tools, name: str, label: str, index: Path, source: Path) -> Contender:
    argv = _worker(tools.python, "atartape_ttfb.py", "--index", index, "--source", source)
    return Contender(name, label, argv)
