"""The goals of the benchmark, checked against one run.

A ratio goal takes, in every measured round, the ratio of the two contenders' figures (they ran
in the same round, one after the other) and compares the median of those ratios with its target:
a slow spell of the shared machine then weighs on both sides of a ratio rather than on one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from measure import Result, Sample

MIB = 1024 * 1024

Results = dict[str, dict[str, Result]]  # group -> contender name -> result
Metric = Callable[[Sample], float | None]

COLD_GROUPS = ("cold-small", "cold-large", "cold-stdlib", "cold-record")


def wall(s: Sample) -> float | None:
    return s.wall


def inproc(s: Sample) -> float | None:
    value = s.report.get("inproc_s")
    return float(value) if value is not None else None


def core(s: Sample) -> float | None:
    """A floor's seconds inside its primitive's calls alone (the views group's floors)."""
    value = s.report.get("core_s")
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Goal:
    name: str
    measured: str
    target: str
    status: str  # PASS, FAIL or SKIP
    value: float | None = None
    group: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _get(results: Results, group: str, name: str) -> Result | None:
    res = results.get(group, {}).get(name)
    return res if res is not None and res.ok else None


def _skip(group: str, name: str, target: str, why: str = "not measured") -> Goal:
    return Goal(name, why, target, "SKIP", group=group)


def _median(res: Result, metric: Metric) -> float | None:
    values = [v for s in res.samples if (v := metric(s)) is not None]
    return statistics.median(values) if values else None


def paired(a: Result, b: Result, metric: Metric, diff: bool = False) -> float | None:
    """The median over the rounds both ran of a/b (or a - b) of ``metric``."""
    other = b.by_round()
    values: list[float] = []
    for s in a.samples:
        t = other.get(s.round)
        x, y = metric(s), metric(t) if t is not None else None
        if x is not None and y is not None and (diff or y > 0):
            values.append(x - y if diff else x / y)
    return statistics.median(values) if values else None


def ratio(
    results: Results,
    group: str,
    num: str,
    den: str,
    limit: float,
    name: str,
    within: bool = False,
    metric: Metric = wall,
) -> Goal:
    """``num`` over ``den`` (median of the per-round ratios); ``within``: |r - 1| <= limit."""
    target = f"within {limit:.0%}" if within else f"<= {limit:g}"
    a, b = _get(results, group, num), _get(results, group, den)
    if a is None or b is None:
        return _skip(group, name, target)
    r = paired(a, b, metric)
    ma, mb = _median(a, metric), _median(b, metric)
    if r is None or ma is None or mb is None:
        return _skip(group, name, target, "no figures")
    ok = abs(r - 1) <= limit if within else r <= limit
    measured = f"{r:.3f} ({ma:.3f} s / {mb:.3f} s)"
    return Goal(name, measured, target, "PASS" if ok else "FAIL", r, group)


def per_round(
    results: Results,
    group: str,
    names: list[str],
    metrics: list[Metric],
    combine: Callable[..., float | None],
) -> float | None:
    """The median over the rounds all of ``names`` ran of ``combine(x, y, ...)``, where each
    argument is that contender's ``metric`` in the round; None if one was not measured."""
    runs = [_get(results, group, n) for n in names]
    if any(r is None for r in runs):
        return None
    rounds = [r.by_round() for r in runs if r is not None]
    values: list[float] = []
    for k in sorted(set.intersection(*(set(r) for r in rounds))):
        xs = [m(r[k]) for r, m in zip(rounds, metrics, strict=True)]
        if all(x is not None for x in xs) and (v := combine(*xs)) is not None:
            values.append(v)
    return statistics.median(values) if values else None


Combine = Callable[[float, float, float], float | None]


def _over(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def added_over_floor(view: float, plain: float, floor: float) -> float | None:
    """What the view adds to the plain stream, over the floor: (view - plain) / floor."""
    return _over(view - plain, floor)


def over_plain_and_floor(view: float, plain: float, floor: float) -> float | None:
    """The view over the plain stream and the floor together: view / (plain + floor)."""
    return _over(view, plain + floor)


def _seconds(res: Result, metric: Metric) -> str:
    value = _median(res, metric)
    return f"{value:.3f} s" if value is not None else "-"


def view_goal(
    results: Results,
    group: str,
    name: str,
    limit: float,
    view: str,
    floor: str,
    combine: Combine,
    also: tuple[tuple[str, str, Combine], ...] = (),
) -> Goal:
    """A goal of the views group: per round, ``combine(view, plain, floor)`` of the view's and
    the plain view's in-process seconds and the floor's seconds in its primitive; the median of
    those against ``limit``. ``also``: other (words, floor, combine) given in the text only."""
    target = f"<= {limit:g}"
    found = [_get(results, group, n) for n in (view, "view-plain", floor)]
    metrics: list[Metric] = [inproc, inproc, core]
    r = per_round(results, group, [view, "view-plain", floor], metrics, combine)
    if r is None:
        return _skip(group, name, target)
    seconds = ", ".join(
        f"{what} {_seconds(res, metric)}"
        for what, res, metric in zip(("view", "plain", "floor"), found, metrics, strict=True)
        if res is not None
    )
    measured = f"{r:.3f} ({seconds})"
    for words, other, how in also:
        x = per_round(results, group, [view, "view-plain", other], metrics, how)
        if x is not None:
            measured += f"; {words} {x:.3f}"
    return Goal(name, measured, target, "PASS" if r <= limit else "FAIL", r, group)


def sealing(results: Results, group: str, limit: float) -> Goal:
    """What sealing adds to the stream over what ChaCha20-Poly1305 alone costs on the same
    bytes: per round, (age view - plain view) / the sealing floor's seconds in its encrypt
    calls. Also given: age / (plain + floor), and the added time over a floor that also makes
    the digests of the tags the age view checks."""
    return view_goal(
        results,
        group,
        f"{group}, in process: (age view - plain) / ChaCha20-Poly1305 floor",
        limit,
        "view-age",
        "floor-seal",
        added_over_floor,
        (
            ("age / (plain + floor)", "floor-seal", over_plain_and_floor),
            ("added / (ChaCha20 + tags digest floor)", "floor-seal-digest", added_over_floor),
        ),
    )


def compression(results: Results, group: str, limit: float) -> Goal:
    """Streaming the zstd view (every frame compressed again and checked before it is sent)
    against the plain stream plus compressing the same frames in one thread: per round,
    zstd view / (plain view + the compression floor's seconds in its compress calls). Also
    given: the same over a floor that also makes the Poly1305 tag the view checks."""
    return view_goal(
        results,
        group,
        f"{group}, in process: zstd view (frames compressed again) / (plain + zstd floor)",
        limit,
        "view-zstd",
        "floor-zstd",
        over_plain_and_floor,
        (("over plain + (zstd + Poly1305 floor)", "floor-zstd-digest", over_plain_and_floor),),
    )


def best_floor(results: Results, group: str) -> str | None:
    """The parallel read floor (any thread count) with the lowest median wall time."""
    floors = [r for n, r in results.get(group, {}).items() if n.startswith("floor-par-") and r.ok]
    return min(floors, key=lambda r: r.wall).name if floors else None


def rss_margin(
    results: Results, group: str, mine: str, other: str, margin_mib: float, name: str
) -> Goal:
    """Median peak RSS of ``mine`` at most ``margin_mib`` above that of ``other``."""
    target = f"<= +{margin_mib:g} MiB"
    a, b = _get(results, group, mine), _get(results, group, other)
    if a is None or b is None:
        return _skip(group, name, target)
    d = (a.rss - b.rss) / MIB
    measured = f"{d:+.2f} MiB ({a.rss / MIB:.2f} vs {b.rss / MIB:.2f})"
    return Goal(name, measured, target, "PASS" if d <= margin_mib else "FAIL", d, group)


def rss_worst(results: Results, group: str, margin_mib: float) -> Goal:
    """The largest median peak RSS of any atartape contender vs tartape's."""
    name = f"{group}: peak RSS, largest atartape contender - tartape"
    mine = [r for n, r in results.get(group, {}).items() if n.startswith("atartape") and r.ok]
    if not mine:
        return _skip(group, name, f"<= +{margin_mib:g} MiB")
    worst = max(mine, key=lambda r: r.rss)
    goal = rss_margin(results, group, worst.name, "tartape", margin_mib, name)
    return (
        goal if goal.status == "SKIP" else replace(goal, measured=f"{goal.measured}, {worst.label}")
    )


def ttfb(results: Results, name_in: str, limit_ms: float, name: str) -> Goal:
    """The in-process time to first byte of a resumed stream (median over processes)."""
    target = f"<= {limit_ms:g} ms"
    res = _get(results, "ttfb", name_in)
    cold = res.report_median("ttfb_cold") if res else None
    if res is None or cold is None:
        return _skip("ttfb", name, target)
    warm = res.report_median("ttfb_warm")
    ms = cold * 1000
    measured = f"{ms:.2f} ms (warm {warm * 1000:.2f} ms)" if warm is not None else f"{ms:.2f} ms"
    return Goal(name, measured, target, "PASS" if ms <= limit_ms else "FAIL", ms, "ttfb")


def evaluate(
    results: Results,
    sparse_label: str = "20 GiB file - 1 GiB file",
    synthetic_entries: int = 1_000_000,
    cold_skip: str | None = None,
) -> list[Goal]:
    a = "atartape-asyncio"
    goals: list[Goal] = []

    # Cold: the page cache dropped before every run (the programs primed again).
    for group, limit in (("cold-small", 0.7), ("cold-stdlib", 0.6), ("cold-large", 0.5)):
        goals.append(
            ratio(results, group, a, "gnu-tar", limit, f"{group}: atartape chunks() / GNU tar")
        )
    floor = best_floor(results, "cold-large")
    name = "cold-large: atartape chunks() / best parallel read floor"
    goals.append(
        ratio(
            results,
            "cold-large",
            a,
            floor or "floor-par",
            1.15,
            f"{name} ({floor})" if floor else name,
        )
    )
    goals.append(
        ratio(
            results,
            "cold-record",
            "atartape-record",
            "find",
            2.0,
            "cold-record small: atartape.record() / find -printf",
        )
    )

    # Warm command line: atartape play against GNU tar, to a pipe and to a file.
    cli = "atartape-cli-pipe"
    for group, limit in (("large", 1.0), ("stdlib", 1.3), ("small", 2.0)):
        name = f"{group}: play -o - | cat / tar -cf - | cat"
        goals.append(ratio(results, group, cli, "gnu-tar", limit, name))
    name = "large: play -o FILE / tar -cf FILE && sync FILE (both fsynced)"
    goals.append(ratio(results, "large", "atartape-cli-file", "gnu-tar-file", 1.0, name))

    # Warm, in process (after imports and Tape.open): the engine alone.
    goals.append(
        ratio(
            results,
            "large",
            a,
            "floor",
            1.25,
            "large, in process: atartape chunks() / floor",
            metric=inproc,
        )
    )
    for group in ("small", "large", "real", "stdlib"):
        name = f"{group}, in process: trio / asyncio"
        goals.append(ratio(results, group, "atartape-trio", a, 1.10, name, metric=inproc))

    # Warm, whole processes (the goals of issue 3).
    goals += [
        ratio(results, "large", a, "floor", 1.25, "large, md5 off: atartape / floor"),
        ratio(results, "large", a, "tartape", 1.1, "large, md5 off: atartape / tartape"),
        ratio(
            results,
            "large",
            "atartape-play-md5",
            "hashlib-floor",
            1.15,
            "large, md5 on: atartape play / hashlib floor",
        ),
        ratio(results, "small", a, "tartape", 0.35, "small: atartape / tartape"),
        ratio(results, "small", a, "gnu-tar", 2.5, "small: atartape / GNU tar"),
        ratio(results, "real", a, "tartape", 0.5, "real: atartape / tartape"),
    ]
    for group in ("small", "large", "real"):
        goals.append(
            ratio(results, group, "atartape-trio", a, 0.10, f"{group}: trio / asyncio", True)
        )

    # Recording (warm).
    goals.append(
        ratio(
            results,
            "record",
            "atartape-record",
            "tartape-record",
            0.15,
            "record small: atartape.record() / tartape.record()",
        )
    )
    goals.append(ttfb(results, "ttfb-small", 10, "resume TTFB, small tree (cold)"))
    label = f"resume TTFB, {synthetic_entries:,}-entry index (cold)"
    goals.append(ttfb(results, "ttfb-synthetic", 20, label))

    # Views (issue 17), in process: sealing and compressing while streaming.
    for group in ("views-large", "views-real"):
        goals.append(sealing(results, group, 1.15))
        goals.append(compression(results, group, 1.15))

    # HTTP: curl fetching the tape to /dev/null.
    goals += [
        ratio(results, "http", "aiohttp-tape", "nginx", 1.2, "http: aiohttp tape_response / nginx"),
        ratio(results, "http", "asgi-tape", "nginx", 1.6, "http: uvicorn TapeApp / nginx"),
        ratio(results, "http", "asgi-tape", "asgi-bare", 1.5, "http: TapeApp / bare ASGI app"),
        ratio(
            results,
            "http",
            "aiohttp-tape",
            "aiohttp-bare",
            1.5,
            "http: tape_response / bare aiohttp handler",
        ),
    ]

    # Memory.
    for group in ("small", "large", "real", "stdlib"):
        goals.append(rss_worst(results, group, 16))
    for group in ("small", "large", "real"):
        goals.append(
            rss_margin(results, group, a, "tartape", 8, f"{group}: peak RSS atartape - tartape")
        )
    goals.append(
        rss_margin(
            results,
            "sparse",
            "sparse-big",
            "sparse-small",
            5,
            f"sparse: peak RSS {sparse_label}",
        )
    )
    goals.append(
        rss_margin(
            results,
            "large",
            "atartape-sleepy",
            a,
            4,
            "large: peak RSS sleepy consumer - plain",
        )
    )
    if cold_skip:
        goals = [
            Goal(g.name, f"skipped: {cold_skip}", g.target, "SKIP", group=g.group)
            if g.group in COLD_GROUPS
            else g
            for g in goals
        ]
    return goals
