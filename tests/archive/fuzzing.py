"""How many examples the reader's property tests run: a few by default; with ``--fuzz`` (see
conftest.py) or ``ATARTAPE_FUZZ=1``, 20,000 each; ``ATARTAPE_FUZZ=<n>`` (n > 1), n each."""

from __future__ import annotations

import os

LONG_RUN = 20_000


def examples(default: int) -> int:
    value = os.environ.get("ATARTAPE_FUZZ", "")
    if not value:
        return default
    return int(value) if value.isdigit() and int(value) > 1 else LONG_RUN
