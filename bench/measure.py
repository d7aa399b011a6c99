"""Run contender processes, time them from outside and read their peak RSS with ``os.wait4``.

Each contender is spawned and reaped by ``reaper.py``, a bare interpreter that does nothing else:
a child's ``ru_maxrss`` on Linux also counts the peak RSS its parent had when it was spawned, so the
spawner must stay small. The reaper's own size is then the floor under every reading
(``rss_floor``); processes smaller than that (GNU tar) read as the floor.

A cold group drops the page cache (with dentries and inodes) before every run, then runs the
contender's ``prime`` command (the same program on a tiny tree, untimed): the measured run finds
its program loaded and its data, index included, on disk only.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One process to measure: a name, a label for tables and the command line.

    ``prime``: the command run (untimed) after the caches are dropped in a cold group;
    ``outputs``: files the contender writes, removed (untimed) before each run and at the end.
    """

    name: str
    label: str
    argv: list[str]
    prime: list[str] | None = None
    outputs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds, from just before spawn to the reaped exit
    rss: int  # peak resident set size, bytes
    report: dict[str, Any]  # the last JSON line the process printed, if any
    round: int = 0  # the measured round it belongs to (pairs samples of one round)


@dataclass
class Result:
    """All measured runs of one contender in one group (warm-up runs excluded)."""

    name: str
    label: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a server's peak RSS

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.samples)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def rss(self) -> float:
        return statistics.median(s.rss for s in self.samples)

    def report_median(self, key: str) -> float | None:
        values = [float(s.report[key]) for s in self.samples if s.report.get(key) is not None]
        return statistics.median(values) if values else None

    def by_round(self) -> dict[int, Sample]:
        return {s.round: s for s in self.samples}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "error": self.error, **self.extra}
        if self.samples:
            out.update(
                median_wall_s=self.wall,
                median_peak_rss_bytes=self.rss,
                wall_s=[s.wall for s in self.samples],
                peak_rss_bytes=[s.rss for s in self.samples],
                reports=[s.report for s in self.samples],
            )
        return out


class ContenderFailed(Exception):
    pass


REAPER = Path(__file__).resolve().parent / "reaper.py"


def run_once(argv: Sequence[str]) -> Sample:
    """Run ``argv`` to its end under the reaper; its stdout and stderr go to temporary files."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as result,
    ):
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
            (os.POSIX_SPAWN_DUP2, result.fileno(), 3),
        ]
        reaper = [sys.executable, "-I", "-S", str(REAPER), *argv]
        pid = os.posix_spawn(reaper[0], reaper, dict(os.environ), file_actions=actions)
        _, status, _ = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise ContenderFailed(f"reaper failed: {err.read().decode(errors='replace')}")
        result.seek(0)
        wall_ns, maxrss_kib, code = (int(x) for x in result.read().split())
        out.seek(0)
        stdout = out.read().decode(errors="replace")
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise ContenderFailed(f"exit {code}: {' '.join(argv)}\n{tail}")
    report: dict[str, Any] = {}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            report = json.loads(line)
            break
    return Sample(wall=wall_ns / 1e9, rss=maxrss_kib * 1024, report=report)


DROP_CACHES = "/proc/sys/vm/drop_caches"


def drop_caches() -> None:
    """Write back dirty pages, then drop the page cache, dentries and inodes (Linux, root)."""
    os.sync()
    with open(DROP_CACHES, "w") as f:
        f.write("3\n")


def cannot_drop_caches() -> str | None:
    """Why the caches cannot be dropped here, or None when they can (tried once)."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if os.geteuid() != 0:
        return "not root"
    try:
        drop_caches()
    except OSError as e:
        return f"{DROP_CACHES}: {e.strerror or e}"
    return None


def remove_outputs(contenders: Sequence[Contender]) -> None:
    for c in contenders:
        for path in c.outputs:
            path.unlink(missing_ok=True)


def rss_floor() -> int:
    """The lowest peak RSS this method can read: that of ``true`` spawned by the reaper."""
    return run_once([shutil.which("true") or "/bin/true"]).rss


def measure_group(
    title: str, contenders: Sequence[Contender], runs: int, warmup: int = 1, cold: bool = False
) -> dict[str, Result]:
    """Run every contender ``warmup + runs`` times, round-robin; keep the last ``runs``.

    Each round starts one contender later than the previous one, so that no contender always
    runs right after the same other one. ``cold``: drop the caches and prime before each run.
    """
    results = {c.name: Result(c.name, c.label) for c in contenders}
    rounds = warmup + runs
    for r in range(rounds):
        k = r % len(contenders)
        order = list(contenders[k:]) + list(contenders[:k])
        tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{runs}"
        parts: list[str] = []
        for c in order:
            res = results[c.name]
            if res.error is not None:
                continue
            try:
                for path in c.outputs:
                    path.unlink(missing_ok=True)
                if cold:
                    drop_caches()
                    if c.prime:
                        run_once(c.prime)
                sample = run_once(c.argv)
            except ContenderFailed as e:
                res.error = str(e)
                print(f"  ! {c.name} failed, dropped: {e}", file=sys.stderr, flush=True)
                continue
            if r >= warmup:
                res.samples.append(replace(sample, round=r - warmup))
            parts.append(f"{c.name} {sample.wall:.2f}s")
        print(f"  [{title} {tag}] " + ", ".join(parts), flush=True)
    remove_outputs(contenders)
    return results
