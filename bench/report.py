"""Tables of the results, as plain text or as Markdown, and the JSON record of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


def group_table(info: GroupInfo, results: dict[str, Result], floor: int, markdown: bool) -> str:
    ttfb = any(r.report_median("ttfb_cold") is not None for r in results.values())
    if ttfb:
        header = ["contender", "TTFB cold (ms)", "TTFB warm (ms)", "process (s)", "peak RSS (MiB)"]
    else:
        header = ["contender", "wall (s)", "MiB/s", "x floor", "peak RSS (MiB)"]
    base = results.get("floor")
    rows: list[list[str]] = []
    for res in results.values():
        if not res.ok:
            rows.append([res.label, "failed" if res.error else "-", "", "", ""])
            continue
        if ttfb:
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
            continue
        speed = f"{info.content_bytes / MIB / res.wall:.0f}" if info.content_bytes else "-"
        vs = f"{res.wall / base.wall:.2f}" if base is not None and base.ok else "-"
        rows.append([res.label, f"{res.wall:.3f}", speed, vs, _rss(res, floor)])
    title = f"{info.title}: {info.description}"
    if info.files is not None and info.content_bytes is not None:
        title += f" ({info.files:,} files, {info.content_bytes / MIB:,.1f} MiB)"
    title = f"### {title}" if markdown else title
    return f"{title}\n\n{table(header, rows, markdown)}"


def goals_table(goals: list[Goal], markdown: bool) -> str:
    rows = [[g.name, g.measured, g.target, g.status] for g in goals]
    title = "### Goals" if markdown else "Goals"
    return f"{title}\n\n{table(['goal', 'measured (medians)', 'target', 'result'], rows, markdown)}"


def render(
    meta: dict[str, Any],
    infos: dict[str, GroupInfo],
    results: Results,
    goals: list[Goal],
    notes: list[str],
    markdown: bool,
) -> str:
    parts = [
        f"Medians of {meta['runs']} runs per contender after {meta['warmup']} warm-up, "
        f"run round-robin; Python {meta['python']}, {meta['cpus']} CPUs, "
        f"atartape {meta['atartape']}, tartape {meta['tartape']}; load average "
        f"{meta['load_average_start']} at the start, {meta['load_average_end']} at the end. "
        "Wall time is the whole "
        "process, timed from outside; peak RSS from os.wait4. "
        f"Readings at the spawner's own size ({meta['rss_floor_bytes'] / MIB:.1f} MiB) "
        "are shown as <= (a child's ru_maxrss cannot go below its parent's RSS at spawn)."
    ]
    floor = int(meta["rss_floor_bytes"])
    for group, info in infos.items():
        if results.get(group):
            parts.append(group_table(info, results[group], floor, markdown))
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
