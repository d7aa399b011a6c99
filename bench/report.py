"""Tables of the results, as plain text or as Markdown, and the JSON record of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from goals import Goal, Results
from measure import Result

MIB = 1024 * 1024


@dataclass(frozen=True)
class GroupInfo:
    """What a group measured: a title, and the tree it read where it read one."""

    title: str
    description: str
    files: int | None = None
    content_bytes: int | None = None
    runs: int | None = None
    warmup: int | None = None
    cold: bool = False
    load: tuple[float, float] | None = None  # 1-minute load average before and after

    def with_rounds(self, runs: int, warmup: int, cold: bool) -> GroupInfo:
        return replace(self, runs=runs, warmup=warmup, cold=cold)


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        rows = [[c.replace("|", "\\|") for c in r] for r in rows]
        lines = ["| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _rss(res: Result, floor: int) -> str:
    mib = res.rss / MIB
    # A reading at the spawner's own size is the floor of the method, not the child's size.
    return f"<= {mib:.1f}" if floor and res.rss <= floor * 1.02 else f"{mib:.1f}"


def baseline(results: dict[str, Result]) -> tuple[str, Result] | None:
    """What the "x" column divides by: nginx, the floor, find, the plain view (views groups) or
    the fastest parallel floor."""
    for name, label in (
        ("nginx", "nginx"),
        ("floor", "floor"),
        ("find", "find"),
        ("view-plain", "plain view"),
    ):
        res = results.get(name)
        if res is not None and res.ok:
            return label, res
    floors = [r for n, r in results.items() if n.startswith("floor-par-") and r.ok]
    return ("best floor", min(floors, key=lambda r: r.wall)) if floors else None


def _ttfb_table(results: dict[str, Result], floor: int, markdown: bool) -> str:
    header = ["contender", "TTFB cold (ms)", "TTFB warm (ms)", "process (s)", "peak RSS (MiB)"]
    rows: list[list[str]] = []
    for res in results.values():
        if not res.ok:
            rows.append([res.label, "failed" if res.error else "-", "", "", ""])
            continue
        cold, warm = res.report_median("ttfb_cold"), res.report_median("ttfb_warm")
        rows.append(
            [
                res.label,
                f"{cold * 1000:.2f}" if cold is not None else "-",
                f"{warm * 1000:.2f}" if warm is not None else "-",
                f"{res.wall:.3f}",
                _rss(res, floor),
            ]
        )
    return table(header, rows, markdown)


def group_table(info: GroupInfo, results: dict[str, Result], floor: int, markdown: bool) -> str:
    if any(r.report_median("ttfb_cold") is not None for r in results.values()):
        body = _ttfb_table(results, floor, markdown)
    else:
        base = baseline(results)
        http = "nginx" in results or any(
            "server_peak_rss_bytes" in r.extra for r in results.values()
        )
        inproc = any(r.report_median("inproc_s") is not None for r in results.values())
        core = any(r.report_median("core_s") is not None for r in results.values())
        header = ["contender", "wall (s)", "MiB/s", f"x {base[0] if base else 'floor'}"]
        if inproc:
            header += ["in process (s)", "in process MiB/s"]
        if core:
            header.append("in its primitive (s)")
        header.append("server peak RSS (MiB)" if http else "peak RSS (MiB)")
        rows: list[list[str]] = []
        size = info.content_bytes
        for res in results.values():
            if not res.ok:
                rows.append([res.label, "failed" if res.error else "-"] + [""] * (len(header) - 2))
                continue
            speed = f"{size / MIB / res.wall:.0f}" if size else "-"
            vs = f"{res.wall / base[1].wall:.2f}" if base is not None else "-"
            row = [res.label, f"{res.wall:.3f}", speed, vs]
            if inproc:
                t = res.report_median("inproc_s")
                row += [f"{t:.3f}", f"{size / MIB / t:.0f}" if size else "-"] if t else ["-", "-"]
            if core:
                c = res.report_median("core_s")
                row.append(f"{c:.3f}" if c is not None else "")
            if http:
                server = res.extra.get("server_peak_rss_bytes")
                row.append(f"{server / MIB:.1f}" if server else "-")
            else:
                row.append(_rss(res, floor))
            rows.append(row)
        body = table(header, rows, markdown)
    title = f"{info.title}: {info.description}"
    if info.files is not None and info.content_bytes is not None:
        title += f" ({info.files:,} files, {info.content_bytes / MIB:,.1f} MiB)"
    title = f"### {title}" if markdown else title
    how = ""
    if info.runs is not None:
        how = f"Medians of {info.runs} runs"
        how += f" after {info.warmup} warm-up round" if info.warmup else ", no warm-up"
        if info.cold:
            how += "; page cache dropped and the program primed before every run"
        if info.load is not None:
            how += f"; load average {info.load[0]:.2f} before, {info.load[1]:.2f} after"
        how += ".\n\n"
    return f"{title}\n\n{how}{body}"


def goals_table(goals: list[Goal], markdown: bool) -> str:
    rows = [[g.name, g.measured, g.target, g.status] for g in goals]
    title = "### Goals" if markdown else "Goals"
    header = ["goal", "measured (median of per-round ratios)", "target", "result"]
    return f"{title}\n\n{table(header, rows, markdown)}"


def render(
    meta: dict[str, Any],
    infos: dict[str, GroupInfo],
    results: Results,
    goals: list[Goal],
    notes: list[str],
    markdown: bool,
) -> str:
    parts = [
        f"Python {meta['python']}, {meta['cpus']} CPUs, atartape {meta['atartape']}, "
        f"tartape {meta['tartape']}, {meta.get('gnu_tar') or 'GNU tar missing'}, "
        f"{meta.get('nginx') or 'nginx missing'}, uvicorn on {meta.get('uvicorn_stack')}; "
        f"load average {meta['load_average_start']} at the start, "
        f"{meta['load_average_end']} at the end; {meta['seconds']:.0f} s in all. "
        f"Warm groups: medians of {meta['runs']} runs per contender after {meta['warmup']} "
        f"warm-up round; cold groups: {meta['cold_runs']} runs, no warm-up "
        f"(cold: {meta['cold']}). The contenders of a group run round-robin. "
        "Wall time is the whole process, timed from outside; peak RSS from os.wait4 "
        "(of a pipeline: its largest process). "
        f"Readings at the spawner's own size ({meta['rss_floor_bytes'] / MIB:.1f} MiB) "
        "are shown as <= (a child's ru_maxrss cannot go below its parent's RSS at spawn). "
        '"in process": the seconds the worker spent in its loop alone (after imports and '
        "Tape.open)."
    ]
    if any(r.report_median("core_s") is not None for g in results.values() for r in g.values()):
        parts[0] += (
            ' "in its primitive": the seconds a floor of the views groups spent inside its '
            "sealing or compressing calls alone (reading the plain tape file left out)."
        )
    floor = int(meta["rss_floor_bytes"])
    for group, info in infos.items():
        if results.get(group):
            parts.append(group_table(info, results[group], floor, markdown))
        elif "skipped" in info.description:
            title = f"{info.title}: {info.description}"
            parts.append(f"### {title}" if markdown else title)
    parts.append(goals_table(goals, markdown))
    if notes:
        bullet = "- " if markdown else "  * "
        parts.append(
            ("Notes:\n\n" if markdown else "Notes:\n") + "\n".join(bullet + n for n in notes)
        )
    return "\n\n".join(parts) + "\n"


def to_json(
    meta: dict[str, Any],
    infos: dict[str, GroupInfo],
    results: Results,
    goals: list[Goal],
    notes: list[str],
) -> dict[str, Any]:
    return {
        "meta": meta,
        "groups": {
            g: {
                "info": asdict(info),
                "contenders": {n: r.to_json() for n, r in results.get(g, {}).items()},
            }
            for g, info in infos.items()
        },
        "goals": [g.to_json() for g in goals],
        "notes": notes,
    }
