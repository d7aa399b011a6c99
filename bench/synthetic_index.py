"""Hook: a synthetic index of many entries, for the resume time-to-first-byte goal.

Recording a real tree of 1,000,000 files is too slow and too big for the disk, so the library
provides ``atartape._synthetic.write_synthetic_index(index_path, source_root, n_entries)``, which
writes a valid index of ``n_entries`` entries whose content lives under ``source_root`` (only the
last entries must exist there: the measured stream starts 4096 bytes before the end).

Run as a script (``python bench/synthetic_index.py INDEX SOURCE N``) so that the memory used to
build the index never counts in the runner. Exit status 3 means "not available: skip".
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

SKIP_EXIT = 3


def build_synthetic_index(index_path: Path, source_root: Path, n: int) -> str | None:
    """Build the index; return None when built, or a note saying why it was skipped."""
    try:
        from atartape import _synthetic  # type: ignore[attr-defined, unused-ignore]
    except ImportError as e:
        return f"atartape._synthetic is not available ({e})"
    write = getattr(_synthetic, "write_synthetic_index", None)
    if write is None:
        return "atartape._synthetic.write_synthetic_index is missing"
    source_root.mkdir(parents=True, exist_ok=True)
    result = write(index_path, source_root, n)
    if inspect.isawaitable(result):
        import anyio

        async def wait() -> None:
            await result

        anyio.run(wait)
    return None


def main() -> None:
    index, source, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    note = build_synthetic_index(index, source, n)
    if note is not None:
        print(note)
        raise SystemExit(SKIP_EXIT)


if __name__ == "__main__":
    main()
