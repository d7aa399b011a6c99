"""Hook: a synthetic index of many entries, for the resume time-to-first-byte goal.

Recording a real tree of 1,000,000 files is too slow and too big for the disk, so the test
suite's ``tests/synthetic.py`` writes a valid index of ``n_entries`` entries whose content lives
under ``source_root`` (only the last entries must exist there: the measured stream starts 4096
bytes before the end).

Run as a script (``python bench/synthetic_index.py INDEX SOURCE N``) so that the memory used to
build the index never counts in the runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: tests/

from tests.synthetic import write_synthetic_index


def main() -> None:
    index, source, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    source.mkdir(parents=True, exist_ok=True)
    write_synthetic_index(index, source, n)


if __name__ == "__main__":
    main()
