"""Benchmark atartape against GNU tar, nginx, Python's tarfile, tartape and the Python floor.

    python bench/run.py [--quick] [--only GROUP,...] [--no-cold] [--runs N] [--cold-runs N]
                        [--json PATH] [--markdown [PATH]]

Builds its data sets once (under bench/.data, or $ATARTAPE_BENCH_DIR) and reuses them. Every
contender is a whole process that writes its stream to /dev/null (or a file, or fetches it over
HTTP with curl); the contenders of a group run round-robin, and the medians of wall time, peak
RSS and in-process time are reported, with the goals (goals.py) checked against the medians of
the per-round ratios.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import datasets
import servers
from contenders import (
    BENCH,
    PARALLEL_FLOORS,
    WORKERS,
    Tools,
    Tree,
    ViewTree,
    atartape_stream,
    cold_group,
    cold_record_group,
    curl_contender,
    record_group,
    stream_group,
    views_group,
)
from contenders import ttfb_contender as ttfb_of
from goals import Results, evaluate
from measure import Contender, Result, cannot_drop_caches, measure_group, rss_floor
from report import GroupInfo, render, to_json
from tartape_env import ensure_tartape

WARM_SETS = ("small", "large", "real", "stdlib")
COLD_SETS = ("cold-small", "cold-large", "cold-stdlib")
VIEW_SETS = ("views-large", "views-real")
GROUPS = (*WARM_SETS, *COLD_SETS, "record", "cold-record", "ttfb", "sparse", *VIEW_SETS, "http")
ALIASES = {"cold": (*COLD_SETS, "cold-record"), "warm": WARM_SETS, "views": VIEW_SETS}
COLD_GROUPS = ALIASES["cold"]
# The sparse group (a 20 GiB and a 1 GiB sparse file, 6 rounds) took 74 s in an earlier full
# run (4.7 s per 20 GiB stream), so it is on by default; --no-sparse leaves it out.
SPARSE_BY_DEFAULT = True
# The views groups (views-large, views-real) took about 5 minutes on a busy machine, so they run
# only when asked: --views, or named in --only.
# The zstd view of the views groups: recorded with these, and the compression floor uses them.
VIEW_LEVEL = 3
VIEW_FRAME_SIZE = 4 * 1024 * 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sets and fewer runs (smoke test)")
    p.add_argument(
        "--only",
        action="append",
        metavar="GROUP",
        help=f"run only these groups (repeat or comma-separate): {', '.join(GROUPS)};\n"
        "'cold' stands for every cold group, 'warm' for the warm stream groups,\n"
        "'views' for views-large and views-real",
    )
    p.add_argument("--runs", type=int, help="measured runs per contender (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1; cold: 0)")
    p.add_argument(
        "--cold-runs", type=int, help="measured runs in the cold groups (default 5, quick 1)"
    )
    p.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the cold groups: drop the page cache before each run (on by default where it\n"
        "can be done: root on Linux; otherwise they are skipped with a note)",
    )
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
    p.add_argument(
        "--views",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the views groups: stream the zstd, age and zstd+age views against their floors\n"
        "(off by default, about 5 minutes; on when named in --only)",
    )
    args = p.parse_args(argv)
    only: list[str] = []
    for item in args.only or []:
        for g in item.split(","):
            only += list(ALIASES.get(g, (g,))) if g else []
    unknown = sorted(set(only) - set(GROUPS))
    if unknown:
        p.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    args.groups = [g for g in GROUPS if not only or g in only]
    if args.views is None:
        args.views = any(g in VIEW_SETS for g in only)
    args.views_left_out = [g for g in args.groups if g in VIEW_SETS and not args.views]
    args.groups = [g for g in args.groups if g not in args.views_left_out]
    for name in ("runs", "cold_runs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def probe_atartape(python: str) -> str | None:
    """The atartape version importable in ``python``, or None (checked in a child process)."""
    code = "import atartape; print(getattr(atartape, '__version__', 'unknown'))"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def atartape_command(python: str) -> tuple[str, ...]:
    """The ``atartape`` entry point beside ``python`` (a virtual environment's), else -m."""
    script = Path(python).parent / "atartape"
    return (str(script),) if os.access(script, os.X_OK) else (python, "-m", "atartape")


def tool_version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return None
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else None


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
        self.out_dir = root / "out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.sizes = datasets.QUICK if args.quick else datasets.FULL
        self.runs: int = args.runs or (2 if args.quick else 5)
        self.cold_runs: int = args.cold_runs or (1 if args.quick else 5)
        self.infos: dict[str, GroupInfo] = {}
        self.results: Results = {}
        self.notes: list[str] = []
        self.trees: dict[str, tuple[Tree, Tools]] = {}
        self.cold_skip: str | None = None  # why the cold groups are skipped

    def dataset(self, name: str) -> datasets.DataSet:
        return datasets.dataset(self.root, self.sizes, name)

    def measure(
        self, group: str, contenders: list[Contender], cold: bool = False
    ) -> dict[str, Result]:
        if not contenders:
            self.notes.append(f"{group}: nothing to measure")
            return {}
        runs, warmup = (self.cold_runs, 0) if cold else (self.runs, self.args.warmup)
        started, load = time.perf_counter(), os.getloadavg()[0]
        self.results[group] = measure_group(group, contenders, runs, warmup, cold=cold)
        print(f"  {group} took {time.perf_counter() - started:.0f} s", flush=True)
        info = self.infos.get(group)
        if info is not None:
            info = info.with_rounds(runs, warmup, cold)
            self.infos[group] = replace(info, load=(round(load, 2), round(os.getloadavg()[0], 2)))
        return self.results[group]

    # ------------------------------------------------------------------ recorded trees

    def record_atartape(self, source: Path, index: Path) -> bool:
        argv = [self.tools.python, str(WORKERS / "atartape_record.py"), "--source", str(source)]
        argv += ["--index", str(index)]
        return prepare(argv, f"atartape record of {source}", self.notes) is not None

    def record_tartape(self, source: Path, catalog: Path) -> bool:
        assert self.tools.tartape_python is not None
        argv = [self.tools.tartape_python, str(WORKERS / "tartape_worker.py"), "record"]
        argv += ["--source", str(source), "--catalog", str(catalog)]
        return prepare(argv, f"tartape record of {source}", self.notes) is not None

    def tree(self, name: str, tartape: bool = True) -> tuple[Tree, Tools]:
        """The data set ``name`` recorded by atartape (and tartape), once per run (untimed).

        Returns the tools that can play it: a contender whose recording failed is left out.
        """
        if name in self.trees:
            return self.trees[name]
        ds = self.dataset(name)
        tree = Tree(
            ds.path,
            self.index_dir / f"{name}.atartape.db",
            self.index_dir / f"{name}.tartape",
        )
        tools = self.tools
        if tools.atartape and not self.record_atartape(tree.source, tree.index):
            tools = Tools(tools.python, tools.sh, False, tools.tartape_python, (), tools.curl)
        if tools.tartape_python and (not tartape or not self.record_tartape(ds.path, tree.catalog)):
            tools = Tools(
                tools.python, tools.sh, tools.atartape, None, tools.atartape_cli, tools.curl
            )
        self.trees[name] = (tree, tools)
        return tree, tools

    def info(self, group: str, name: str, title: str | None = None) -> None:
        ds = self.dataset(name)
        files, size = ds.stats()
        self.infos[group] = GroupInfo(group, title or ds.description, files, size)

    # ------------------------------------------------------------------ groups

    def stream(self, group: str) -> None:
        self.info(group, group)
        tree, tools = self.tree(group)
        parallel = PARALLEL_FLOORS if group == "large" else ()
        contenders = stream_group(tools, tree, self.out_dir, group == "large", parallel)
        check_streams(group, self.measure(group, contenders), self.notes)

    def cold(self, group: str) -> None:
        name = group.removeprefix("cold-")
        if self.cold_skip:
            self.infos[group] = GroupInfo(group, f"{name}, cold: skipped: {self.cold_skip}")
            return
        self.info(group, name, f"{self.dataset(name).description}, cold")
        tree, tools = self.tree(name)
        prime, _ = self.tree("prime", tartape=False)
        results = self.measure(group, cold_group(tools, tree, prime), cold=True)
        check_streams(group, results, self.notes)

    def record(self) -> None:
        ds = self.dataset("small")
        self.infos["record"] = GroupInfo("record", f"recording the small set ({ds.description})")
        self.measure("record", record_group(self.tools, ds.path, self.index_dir))

    def cold_record(self) -> None:
        ds = self.dataset("small")
        title = f"recording the small set ({ds.description}), cold"
        if self.cold_skip:
            self.infos["cold-record"] = GroupInfo(
                "cold-record", f"{title}: skipped: {self.cold_skip}"
            )
            return
        self.infos["cold-record"] = GroupInfo("cold-record", title)
        prime = self.dataset("prime").path
        contenders = cold_record_group(self.tools, ds.path, prime, self.index_dir)
        self.measure("cold-record", contenders, cold=True)

    def ttfb(self) -> None:
        n = self.sizes.synthetic_entries
        desc = f"resume at total_size - 4096 on the small set and on a {n:,}-entry index"
        self.infos["ttfb"] = GroupInfo("ttfb", desc)
        if not self.tools.atartape:
            return
        tree, tools = self.tree("small")
        contenders: list[Contender] = []
        if tools.atartape:
            label = "atartape, small tree"
            contenders.append(ttfb_of(tools, "ttfb-small", label, tree.index, tree.source))
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
            if self.tools.atartape and self.record_atartape(ds.path, index):
                label = f"atartape chunks(), {ds.description}"
                contenders.append(
                    atartape_stream(self.tools, index, ds.path, name=key, label=label)
                )
        self.measure("sparse", contenders)
        check_streams("sparse", self.results.get("sparse", {}), self.notes)

    def view_tree(self, name: str) -> tuple[ViewTree, dict[str, int]] | None:
        """The data set ``name`` recorded with views (untimed, once per run), and its plain tape
        written to a file; with the views' sizes. None (with a note) when that failed."""
        ds = self.dataset(name)
        out = self.root / "views"
        out.mkdir(exist_ok=True)
        tree = ViewTree(
            ds.path,
            self.index_dir / f"{name}.views-age.db",
            self.index_dir / f"{name}.views-zstd-age.db",
            out / f"{name}.tar",
            VIEW_LEVEL,
            VIEW_FRAME_SIZE,
        )
        base = [self.tools.python, str(WORKERS / "atartape_record.py"), "--source", str(ds.path)]
        sealed = prepare(
            [*base, "--index", str(tree.sealed), "--seal", "--plain-out", str(tree.tape_file)],
            f"atartape record of {ds.path} with an age view",
            self.notes,
        )
        zstd = ["--compress", "zstd", "--level", str(VIEW_LEVEL), "--frame-size"]
        packed = prepare(
            [*base, "--index", str(tree.packed), *zstd, str(VIEW_FRAME_SIZE), "--seal"],
            f"atartape record of {ds.path} with zstd and zstd+age views",
            self.notes,
        )
        if sealed is None or packed is None:
            return None
        return tree, {**sealed["views"], **packed["views"]}

    def views(self, group: str) -> None:
        name = group.removeprefix("views-")
        ds = self.dataset(name)
        self.info(group, name, f"the views of the tape of {ds.description}")
        if not self.tools.atartape:
            self.notes.append(f"{group} skipped: atartape does not import")
            return
        print(f"  recording {name} with views ...", flush=True)
        made = self.view_tree(name)
        if made is None:
            return
        tree, sizes = made
        results = self.measure(group, views_group(self.tools, tree))
        check_streams(group, results, self.notes)
        # The floors read the whole plain tape; the compression floor made the very frames
        # recorded (its output and the seek table are the zstd view, byte for byte in size).
        frames = -(-sizes["plain"] // VIEW_FRAME_SIZE) or 1
        table = 12 * frames + 17
        for res in results.values():
            for s in res.samples[:1]:
                if res.name.startswith("floor-") and s.report.get("bytes") != sizes["plain"]:
                    self.notes.append(f"{group}/{res.name}: read {s.report.get('bytes')} bytes")
                if res.name.startswith("floor-zstd") and (
                    s.report.get("out_bytes", 0) + table != sizes["zstd"]
                ):
                    made = f"{s.report.get('out_bytes')} + {table} bytes"
                    self.notes.append(
                        f"{group}/{res.name}: its frames are not those recorded "
                        f"({made}, the view has {sizes['zstd']})"
                    )
        tree.tape_file.unlink(missing_ok=True)

    def http(self) -> None:
        ds = self.dataset("http")
        title = f"HTTP, curl to /dev/null over loopback, the tape of {ds.description}"
        self.info("http", "http", title)
        if self.tools.curl is None:
            self.notes.append("http skipped: no curl")
            return
        tree, tools = self.tree("http", tartape=False)
        if not tools.atartape:
            self.notes.append("http skipped: atartape did not record its tree")
            return
        # The tape written once to a file: the bytes nginx sends, and the bare servers from memory.
        served = self.root / "http-served"
        served.mkdir(exist_ok=True)
        tar = served / "tape.tar"
        argv = [*tools.atartape_cli, "play", str(tree.source), "--index", str(tree.index)]
        proc = subprocess.run([*argv, "-q", "-o", str(tar)], capture_output=True, text=True)
        if proc.returncode != 0:
            self.notes.append(f"http skipped: atartape play -o failed: {proc.stderr.strip()}")
            return
        size = tar.stat().st_size
        log_dir = self.root / "logs"
        log_dir.mkdir(exist_ok=True)
        nginx = servers.find_nginx()
        running: list[tuple[str, str, servers.Server]] = []
        try:
            if nginx is None:
                self.notes.append("http: nginx not found, its contender is skipped")
            else:
                label = "nginx sendfile (static file)"
                running.append(
                    ("nginx", label, servers.start_nginx(nginx, served, "tape.tar", log_dir))
                )
            for kind, label in (
                ("asgi-tape", "uvicorn + atartape.asgi.TapeApp"),
                ("aiohttp-tape", "aiohttp + atartape.aiohttp.tape_response"),
                ("asgi-bare", "uvicorn + bare ASGI app, bytes from memory (64 KiB)"),
                ("aiohttp-bare", "aiohttp + bare handler, bytes from memory (64 KiB)"),
                ("asgi-file", "uvicorn + Starlette FileResponse (static file)"),
            ):
                try:
                    server = servers.start_python(kind, tree.source, tree.index, tar, log_dir)
                except (RuntimeError, TimeoutError) as e:
                    self.notes.append(f"http: {kind} did not start: {e}")
                    continue
                running.append((kind, label, server))
            contenders = [curl_contender(tools, k, lab, s.url) for k, lab, s in running]
            results = self.measure("http", contenders)
            for kind, _, server in running:
                res = results.get(kind)
                rss = server.peak_rss()
                if res is not None and rss is not None:
                    res.extra["server_peak_rss_bytes"] = rss
                if res is not None and any(
                    s.report.get("size_download") != size for s in res.samples
                ):
                    self.notes.append(f"http/{kind}: a fetch did not get all {size} bytes")
        finally:
            for _, _, server in running:
                server.stop()

    def run(self, groups: list[str], sparse: bool) -> None:
        for group in groups:
            print(f"== {group}", flush=True)
            if group in WARM_SETS:
                self.stream(group)
            elif group in COLD_SETS:
                self.cold(group)
            elif group == "record":
                self.record()
            elif group == "cold-record":
                self.cold_record()
            elif group == "ttfb":
                self.ttfb()
            elif group == "http":
                self.http()
            elif group == "sparse" and sparse:
                self.sparse()
            elif group == "sparse":
                self.notes.append("sparse files skipped (--no-sparse)")
            elif group in VIEW_SETS:
                self.views(group)


def uvicorn_stack(python: str) -> str:
    """Which event loop and HTTP parser uvicorn picks by default here."""
    code = (
        "import importlib.util as u\n"
        "loop = 'uvloop' if u.find_spec('uvloop') else 'asyncio'\n"
        "http = 'httptools' if u.find_spec('httptools') else 'h11'\n"
        "print(f'{loop}, {http}')"
    )
    return tool_version([python, "-c", code]) or "unknown"


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
        atartape_cli=atartape_command(sys.executable),
        curl=shutil.which("curl"),
    )
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        notes.append(
            f"the machine was busy when the run started (load average {load_before:.2f}): "
            "timings are noisy"
        )
        print(f"warning: load average {load_before:.2f}; timings will be noisy", file=sys.stderr)
    if args.views_left_out:
        notes.append("views groups left out (about 5 minutes): --views or --only views runs them")
    bench = Bench(args, tools, root)
    bench.notes[:0] = notes
    wants_cold = [g for g in args.groups if g in COLD_GROUPS]
    if args.cold is False:
        bench.cold_skip = "--no-cold"
    elif wants_cold:
        why = cannot_drop_caches()
        if why:
            bench.cold_skip = f"cannot drop caches ({why})"
    if bench.cold_skip and wants_cold:
        bench.notes.append(f"cold groups skipped: {bench.cold_skip}")
        print(f"note: cold groups skipped: {bench.cold_skip}", file=sys.stderr)
    sparse = args.sparse if args.sparse is not None else (args.quick or SPARSE_BY_DEFAULT)
    started = time.perf_counter()
    bench.run(args.groups, sparse)

    s = bench.sizes
    sparse_label = f"{datasets.human(s.sparse_big)} file - {datasets.human(s.sparse_small)}"
    goals = evaluate(bench.results, sparse_label, s.synthetic_entries, bench.cold_skip)
    goals = [g for g in goals if g.group in args.groups]
    nginx = servers.find_nginx()
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mode": "quick" if args.quick else "full",
        "runs": bench.runs,
        "warmup": args.warmup,
        "cold_runs": bench.cold_runs,
        "cold": bench.cold_skip or "on",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "atartape": atartape_version or "missing",
        "tartape": tartape_version if tartape_python else "missing",
        "gnu_tar": tool_version(["tar", "--version"]),
        "nginx": tool_version([nginx, "-v"]) if nginx else None,
        "curl": tool_version([tools.curl, "--version"]) if tools.curl else None,
        "uvicorn_stack": uvicorn_stack(sys.executable),
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
