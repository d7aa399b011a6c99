"""The goals of the benchmark (issue 3), checked against the medians of one run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from measure import Result

MIB = 1024 * 1024

Results = dict[str, dict[str, Result]]  # group -> contender name -> result


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


def ratio(
    results: Results, group: str, num: str, den: str, limit: float, name: str, within: bool = False
) -> Goal:
    """Median wall time of ``num`` over ``den``; ``within``: both ways, |r - 1| <= limit."""
    target = f"within {limit:.0%}" if within else f"<= {limit:g}"
    a, b = _get(results, group, num), _get(results, group, den)
    if a is None or b is None:
        return _skip(group, name, target)
    r = a.wall / b.wall
    ok = abs(r - 1) <= limit if within else r <= limit
    measured = f"{r:.3f} ({a.wall:.3f} s / {b.wall:.3f} s)"
    return Goal(name, measured, target, "PASS" if ok else "FAIL", r, group)


def rss_margin(
    results: Results, group: str, mine: str, other: str, margin_mib: float, name: str
) -> Goal:
    """Median peak RSS of ``mine`` at most ``margin_mib`` above that of ``other``."""
    target = f"<= +{margin_mib:g} MiB"
    a, b = _get(results, group, mine), _get(results, group, other)
    if a is None or b is None:
        return _skip(group, name, target)
    d = (a.rss - b.rss) / MIB
    measured = f"{d:+.1f} MiB ({a.rss / MIB:.1f} vs {b.rss / MIB:.1f})"
    return Goal(name, measured, target, "PASS" if d <= margin_mib else "FAIL", d, group)


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
) -> list[Goal]:
    a = "atartape-asyncio"
    goals: list[Goal] = [
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
    goals.append(
        ratio(
            results,
            "record",
            "atartape-record",
            "tartape-record",
            0.2,
            "record small: atartape / tartape",
        )
    )
    goals.append(ttfb(results, "ttfb-small", 10, "resume TTFB, small tree (cold)"))
    label = f"resume TTFB, {synthetic_entries:,}-entry index (cold)"
    goals.append(ttfb(results, "ttfb-synthetic", 20, label))
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
    return goals
