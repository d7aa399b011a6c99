"""Benchmark atartape against GNU tar, Python's tarfile, tartape and the Python floor.

    python bench/run.py [--quick] [--only GROUP,...] [--runs N] [--json PATH] [--markdown [PATH]]

Builds its data sets once (under bench/.data, or $ATARTAPE_BENCH_DIR) and reuses them. Every
contender is a whole process that writes its stream to /dev/null; the contenders of a group run
round-robin, a warm-up round first, and the medians of wall time and peak RSS are reported, with
the goals of issue 3 checked against them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import datasets
from contenders import BENCH, WORKERS, Tools, atartape_stream, record_group, stream_group
from contenders import ttfb_contender as ttfb_of
from goals import Results, evaluate
from measure import Contender, Result, measure_group, rss_floor
from report import GroupInfo, render, to_json
from tartape_env import ensure_tartape

STREAM_GROUPS = ("small", "large", "real")
GROUPS = (*STREAM_GROUPS, "record", "ttfb", "sparse")
# The sparse group (a 20 GiB and a 1 GiB sparse file, 6 rounds) took 74 s in the full run of
# bench/results.json (4.7 s per 20 GiB stream), within the 2-minute budget, so it is on by
# default; --no-sparse leaves it out. (An earlier engine that refaulted its heap every hop took
# about a minute per 20 GiB stream: if it grows past 2 minutes again, make it opt-in.)
SPARSE_BY_DEFAULT = True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sets and fewer runs (smoke test)")
    p.add_argument(
        "--only",
        action="append",
        metavar="GROUP",
        help=f"run only these groups (repeat or comma-separate): {', '.join(GROUPS)}",
    )
    p.add_argument("--runs", type=int, help="measured runs per contender (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    p.add_argument("--json", type=Path, metavar="PATH", help="save the results as JSON")
    p.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also give the tables in Markdown (README-ready): printed, or saved to PATH",
    )
    p.add_argument(
        "--sparse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stream a 20 GiB and a 1 GiB sparse file (on by default, about 75 s;\n"
        "--quick uses 1.25 GiB and 64 MiB)",
    )
    args = p.parse_args(argv)
    only = [g for item in args.only or [] for g in item.split(",") if g]
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    args.groups = [g for g in GROUPS if not only or g in only]
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def probe_atartape(python: str) -> str | None:
    """The atartape version importable in ``python``, or None (checked in a child process)."""
    code = "import atartape; print(getattr(atartape, '__version__', 'unknown'))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def prepare(argv: list[str], what: str, notes: list[str]) -> dict[str, Any] | None:
    """Run an untimed preparation step; its last JSON line, or None with a note on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " / ".join(proc.stderr.strip().splitlines()[-2:])
        notes.append(f"{what} failed, its contenders are skipped: {tail}")
        print(f"  ! {what} failed: {proc.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    out: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return out


def record_atartape(tools: Tools, source: Path, index: Path, notes: list[str]) -> bool:
    if not tools.atartape:
        return False
    argv = [tools.python, str(WORKERS / "atartape_record.py"), "--source", str(source)]
    return (
        prepare([*argv, "--index", str(index)], f"atartape record of {source}", notes) is not None
    )


def record_tartape(tools: Tools, source: Path, catalog: Path, notes: list[str]) -> bool:
    if tools.tartape_python is None:
        return False
    argv = [tools.tartape_python, str(WORKERS / "tartape_worker.py"), "record"]
    argv += ["--source", str(source), "--catalog", str(catalog)]
    return prepare(argv, f"tartape record of {source}", notes) is not None


def check_streams(group: str, results: dict[str, Result], notes: list[str]) -> None:
    """Every tape stream must be exactly as long as its tape; play with md5 must hash."""
    for res in results.values():
        for s in res.samples:
            size = s.report.get("total_size")
            if size is not None and s.report.get("bytes") not in (None, size):
                notes.append(f"{group}/{res.name}: streamed {s.report['bytes']} of {size} bytes")
                break
        if res.name.endswith("-md5") and res.samples and not res.samples[0].report.get("md5s"):
            notes.append(f"{group}/{res.name}: no file_end event carried an md5sum")


class Bench:
    """One run of the benchmark: the groups it measures and what they found."""

    def __init__(self, args: argparse.Namespace, tools: Tools, root: Path) -> None:
        self.args = args
        self.tools = tools
        self.root = root
        self.index_dir = root / "index"
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self.sizes = datasets.QUICK if args.quick else datasets.FULL
        self.runs: int = args.runs or (2 if args.quick else 5)
        self.infos: dict[str, GroupInfo] = {}
        self.results: Results = {}
        self.notes: list[str] = []

    def dataset(self, name: str) -> datasets.DataSet:
        return datasets.dataset(self.root, self.sizes, name)

    def measure(self, group: str, contenders: list[Contender]) -> None:
        if not contenders:
            self.notes.append(f"{group}: nothing to measure")
            return
        started = time.perf_counter()
        self.results[group] = measure_group(group, contenders, self.runs, self.args.warmup)
        print(f"  {group} took {time.perf_counter() - started:.0f} s", flush=True)

    def stream(self, group: str) -> None:
        ds = self.dataset(group)
        files, size = ds.stats()
        self.infos[group] = GroupInfo(group, ds.description, files, size)
        index = self.index_dir / f"{group}.atartape.db"
        catalog = self.index_dir / f"{group}.tartape"
        tools = self.tools
        if tools.atartape and not record_atartape(tools, ds.path, index, self.notes):
            tools = Tools(tools.python, tools.sh, False, tools.tartape_python)
        if tools.tartape_python and not record_tartape(tools, ds.path, catalog, self.notes):
            tools = Tools(tools.python, tools.sh, tools.atartape, None)
        self.measure(group, stream_group(tools, ds.path, index, catalog, sleepy=group == "large"))
        check_streams(group, self.results.get(group, {}), self.notes)

    def record(self) -> None:
        ds = self.dataset("small")
        self.infos["record"] = GroupInfo("record", f"recording the small set ({ds.description})")
        self.measure("record", record_group(self.tools, ds.path, self.index_dir))

    def ttfb(self) -> None:
        n = self.sizes.synthetic_entries
        desc = f"resume at total_size - 4096 on the small set and on a {n:,}-entry index"
        self.infos["ttfb"] = GroupInfo("ttfb", desc)
        if not self.tools.atartape:
            return
        ds = self.dataset("small")
        index = self.index_dir / "small.atartape.db"
        contenders: list[Contender] = []
        if record_atartape(self.tools, ds.path, index, self.notes):
            label = "atartape, small tree"
            contenders.append(ttfb_of(self.tools, "ttfb-small", label, index, ds.path))
        synthetic = self.index_dir / f"synthetic-{n}.db"
        source = self.root / "synthetic-src"
        print(f"  building the synthetic {n:,}-entry index ...", flush=True)
        for old in (synthetic, synthetic.with_name(synthetic.name + "-journal")):
            old.unlink(missing_ok=True)
        script = str(BENCH / "synthetic_index.py")
        proc = subprocess.run(
            [self.tools.python, script, str(synthetic), str(source), str(n)],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            label = f"atartape, synthetic {n:,}-entry index"
            contenders.append(ttfb_of(self.tools, "ttfb-synthetic", label, synthetic, source))
        else:
            why = (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1:]
            self.notes.append(f"synthetic index skipped: {' '.join(why)}")
        self.measure("ttfb", contenders)

    def sparse(self) -> None:
        small, big = self.dataset("sparse-small"), self.dataset("sparse-big")
        self.infos["sparse"] = GroupInfo("sparse", f"{big.description} vs {small.description}")
        contenders: list[Contender] = []
        for key, ds in (("sparse-small", small), ("sparse-big", big)):
            index = self.index_dir / f"{key}.atartape.db"
            if record_atartape(self.tools, ds.path, index, self.notes):
                label = f"atartape stream(), {ds.description}"
                contenders.append(
                    atartape_stream(self.tools, index, ds.path, name=key, label=label)
                )
        self.measure("sparse", contenders)
        check_streams("sparse", self.results.get("sparse", {}), self.notes)

    def run(self, groups: list[str], sparse: bool) -> None:
        for group in groups:
            print(f"== {group}", flush=True)
            if group in STREAM_GROUPS:
                self.stream(group)
            elif group == "record":
                self.record()
            elif group == "ttfb":
                self.ttfb()
            elif group == "sparse" and sparse:
                self.sparse()
            elif group == "sparse":
                self.notes.append("sparse files skipped (--no-sparse)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(os.environ.get("ATARTAPE_BENCH_DIR") or BENCH / ".data").resolve()
    root = base / ("quick" if args.quick else "full")
    notes: list[str] = []

    atartape_version = probe_atartape(sys.executable)
    if atartape_version is None:
        notes.append(f"atartape does not import in {sys.executable}: its contenders are skipped")
    else:
        # An editable install has no bytecode, and PYTHONDONTWRITEBYTECODE (set on this
        # machine) keeps it so: every contender would compile atartape again, which pip does
        # once, at install time, for tartape and for a wheel of atartape.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(BENCH.parent / "src" / "atartape")],
            check=False,
        )
    tartape_python, tartape_version = ensure_tartape(base)
    if tartape_python is None:
        notes.append(f"tartape skipped: {tartape_version}")
    tools = Tools(
        python=sys.executable,
        sh=shutil.which("sh") or "/bin/sh",
        atartape=atartape_version is not None,
        tartape_python=str(tartape_python) if tartape_python else None,
    )
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        notes.append(
            f"the machine was busy when the run started (load average {load_before:.2f}): "
            "timings are noisy"
        )
        print(f"warning: load average {load_before:.2f}; timings will be noisy", file=sys.stderr)
    bench = Bench(args, tools, root)
    bench.notes[:0] = notes
    sparse = args.sparse if args.sparse is not None else (args.quick or SPARSE_BY_DEFAULT)
    started = time.perf_counter()
    bench.run(args.groups, sparse)

    s = bench.sizes
    sparse_label = f"{datasets.human(s.sparse_big)} file - {datasets.human(s.sparse_small)}"
    goals = evaluate(bench.results, sparse_label, s.synthetic_entries)
    goals = [g for g in goals if g.group in args.groups]
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mode": "quick" if args.quick else "full",
        "runs": bench.runs,
        "warmup": args.warmup,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "atartape": atartape_version or "missing",
        "tartape": tartape_version if tartape_python else "missing",
        "rss_floor_bytes": rss_floor(),
        "load_average_start": round(load_before, 2),
        "load_average_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print()
    print(render(meta, bench.infos, bench.results, goals, bench.notes, markdown=False))
    if args.markdown == "-":
        print(render(meta, bench.infos, bench.results, goals, bench.notes, markdown=True))
    elif args.markdown:
        md = render(meta, bench.infos, bench.results, goals, bench.notes, markdown=True)
        Path(args.markdown).write_text(md)
        print(f"Markdown tables saved to {args.markdown}")
    if args.json:
        data = to_json(meta, bench.infos, bench.results, goals, bench.notes)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
