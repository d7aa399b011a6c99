"""Print README's performance table from a run's ``results.json``.

    python bench/readme_table.py bench/results.json [bench/results-views.json ...]

One row per goal, grouped as README shows them; a goal the runs did not measure is left out.
Several runs may be given (the full run, and a run of the views groups, which the full run leaves
out): their goals are put together, a later file's goal replacing an earlier one of that name.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (README's words, the goal names of goals.py that row gathers)
ROWS: list[tuple[str, list[str]]] = [
    ("cold small / cold stdlib: `chunks()` ÷ GNU tar",
     ["cold-small: atartape chunks() / GNU tar", "cold-stdlib: atartape chunks() / GNU tar"]),
    ("cold large: `chunks()` ÷ GNU tar, ÷ the best parallel read floor",
     ["cold-large: atartape chunks() / GNU tar", "cold-large: atartape chunks() / best parallel"]),
    ("record small: cold ÷ `find -printf` cold; warm ÷ tartape",
     ["cold-record small: atartape.record() / find", "record small: atartape.record() / tartape"]),
    ("CLI to a pipe: `play -o - \\| cat` ÷ `tar -cf - \\| cat` (large, stdlib, small)",
     ["large: play -o - | cat", "stdlib: play -o - | cat", "small: play -o - | cat"]),
    ("CLI to a file, large, both fsynced", ["large: play -o FILE"]),
    ("in process, large: `chunks()` ÷ floor", ["large, in process: atartape chunks() / floor"]),
    ("in process: trio ÷ asyncio (small, large, real, stdlib)",
     ["small, in process: trio", "large, in process: trio", "real, in process: trio",
      "stdlib, in process: trio"]),
    ("HTTP 512 MiB with curl: aiohttp ÷ nginx sendfile; `TapeApp` under uvicorn ÷ nginx",
     ["http: aiohttp tape_response / nginx", "http: uvicorn TapeApp / nginx"]),
    ("sealing, in process: (age view - plain) ÷ ChaCha20-Poly1305 in one thread (large, real)",
     ["views-large, in process: (age view", "views-real, in process: (age view"]),
    ("compressed view (each frame compressed again), in process: zstd ÷ (plain + zstd of the same "
     "frames in one thread) (large, real)",
     ["views-large, in process: zstd view", "views-real, in process: zstd view"]),
    ("peak RSS: atartape's largest contender above tartape (small, large, real, stdlib)",
     ["small: peak RSS, largest", "large: peak RSS, largest", "real: peak RSS, largest",
      "stdlib: peak RSS, largest"]),
    ("whole process, large, md5 off: ÷ floor, ÷ tartape",
     ["large, md5 off: atartape / floor", "large, md5 off: atartape / tartape"]),
    ("whole process, large, md5 on: `play()` ÷ hashlib in one thread", ["large, md5 on"]),
    ("whole process, small: ÷ tartape, ÷ GNU tar",
     ["small: atartape / tartape", "small: atartape / GNU tar"]),
    ("whole process, real: ÷ tartape", ["real: atartape / tartape"]),
    ("whole process, trio ÷ asyncio (small, large, real)",
     ["small: trio / asyncio", "large: trio / asyncio", "real: trio / asyncio"]),
    ("resume, time to first byte: small tree, 1,000,000-entry index",
     ["resume TTFB, small tree", "resume TTFB, 1,000,000"]),
    ("peak RSS, atartape above tartape (small, large, real)",
     ["small: peak RSS atartape - tartape", "large: peak RSS atartape - tartape",
      "real: peak RSS atartape - tartape"]),
    ("peak RSS: 20 GiB sparse file above 1 GiB one; a consumer sleeping between chunks above plain",
     ["sparse: peak RSS", "large: peak RSS sleepy"]),
]  # fmt: skip


def short(measured: str) -> str:
    """``1.105 (2.008 s / 1.957 s)`` gives ``1.105``; ``+7.90 MiB (36.36 vs 28.46)``, ``+7.90``."""
    return measured.split(" (")[0].replace(" MiB", "").replace(" ms", " ms")


def table(goals: list[dict[str, str]]) -> str:
    lines = ["| what | measured | goal | met? |", "| --- | ---: | ---: | --- |"]
    for words, prefixes in ROWS:
        found = [next((g for g in goals if g["name"].startswith(p)), None) for p in prefixes]
        chosen = [g for g in found if g is not None]
        if not chosen:
            continue
        measured = ", ".join(short(g["measured"]) for g in chosen)
        if len(chosen) == 1:
            measured = chosen[0]["measured"].split(", atartape")[0]
        targets = list(dict.fromkeys(g["target"].replace("<=", "≤") for g in chosen))
        status = ", ".join(
            {"PASS": "yes", "FAIL": "**no**"}.get(g["status"], g["status"].lower()) for g in chosen
        )
        lines.append(f"| {words} | {measured} | {' / '.join(targets)} | {status} |")
    return "\n".join(lines)


def main() -> None:
    paths = [Path(a) for a in sys.argv[1:]] or [Path("bench/results.json")]
    goals: dict[str, dict[str, str]] = {}
    for path in paths:
        for goal in json.loads(path.read_text())["goals"]:
            goals[goal["name"]] = goal
    print(table(list(goals.values())))


if __name__ == "__main__":
    main()
