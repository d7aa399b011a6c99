"""Run contender processes, time them from outside and read their peak RSS with ``os.wait4``.

Each contender is spawned and reaped by ``reaper.py``, a bare interpreter that does nothing else:
a child's ``ru_maxrss`` on Linux also counts the peak RSS its parent had when it was spawned, so the
spawner must stay small. The reaper's own size is then the floor under every reading
(``rss_floor``); processes smaller than that (GNU tar) read as the floor.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One process to measure: a name, a label for tables and the command line."""

    name: str
    label: str
    argv: list[str]


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds, from just before spawn to the reaped exit
    rss: int  # peak resident set size, bytes
    report: dict[str, Any]  # the last JSON line the process printed, if any


@dataclass
class Result:
    """All measured runs of one contender in one group (warm-up runs excluded)."""

    name: str
    label: str
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "error": self.error}
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


def rss_floor() -> int:
    """The lowest peak RSS this method can read: that of ``true`` spawned by the reaper."""
    return run_once([shutil.which("true") or "/bin/true"]).rss


def measure_group(
    title: str, contenders: Sequence[Contender], runs: int, warmup: int = 1
) -> dict[str, Result]:
    """Run every contender ``warmup + runs`` times, round-robin; keep the last ``runs``.

    Each round starts one contender later than the previous one, so that no contender always
    runs right after the same other one.
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
                sample = run_once(c.argv)
            except ContenderFailed as e:
                res.error = str(e)
                print(f"  ! {c.name} failed, dropped: {e}", file=sys.stderr, flush=True)
                continue
            if r >= warmup:
                res.samples.append(sample)
            parts.append(f"{c.name} {sample.wall:.2f}s")
        print(f"  [{title} {tag}] " + ", ".join(parts), flush=True)
    return results
