"""``--fuzz``: run the reader's property tests (test_fuzz.py, test_symlink_property.py) far
longer: 20,000 examples each instead of a few hundred in all.

pytest reads options only from the conftest files of the paths it is given, so name this
folder: ``pytest tests/archive --fuzz -k "fuzz or property"``. ``ATARTAPE_FUZZ=1`` does the same
for any run, and ``ATARTAPE_FUZZ=5000`` runs 5,000 examples each (see fuzzing.py).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz",
        action="store_true",
        default=False,
        help="run the archive reader's property tests with 20,000 examples each (long)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz", default=False) and not os.environ.get("ATARTAPE_FUZZ"):
        os.environ["ATARTAPE_FUZZ"] = "1"  # read by the test modules when they are imported
