"""Sizes written by people: parse_size and format_size (pure, no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atartape.format.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MB", 500_000_000),
        ("1GB", 1_000_000_000),
        ("64MiB", 64 * 1024**2),
        ("1GiB", 1024**3),
        ("1.5GiB", 1536 * 1024**2),
        ("5 MiB", 5 * 1024**2),
        ("5mib", 5 * 1024**2),
        ("10kB", 10_000),
        ("2TB", 2 * 10**12),
        ("1PiB", 1024**5),
        ("4096", 4096),
        ("512B", 512),
        ("1_000_000", 1_000_000),
        (" 7 ", 7),
        (1, 1),
        (10**15, 10**15),
    ],
)
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (0, "positive"),
        (-1, "positive"),
        ("0MB", "positive"),
        ("-5MB", "positive"),
        ("5M", "ambiguous"),
        ("5G", "GiB"),
        ("5 parsecs", "unknown unit"),
        ("1.5B", "whole number of bytes"),
        ("0.0001KB", "whole number of bytes"),
        ("", "not a size"),
        ("MB", "not a size"),
        ("1e6", "not a size"),
        ("1,000", "not a size"),
        (1.5, "float"),
        (True, "bool"),
        (None, "NoneType"),
    ],
)
def test_bad_sizes_are_clear_value_errors(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_size(bad)  # type: ignore[arg-type]
    assert "size" in str(info.value)


def test_what_names_the_value() -> None:
    with pytest.raises(ValueError, match="volume size '5M'"):
        parse_size("5M", what="volume size")


@pytest.mark.parametrize(
    ("size", "exact", "rough"),
    [
        (0, "0B", "0B"),
        (1, "1B", "1B"),
        (1000, "1KB", "1000B"),
        (1024, "1KiB", "1KiB"),
        (5 * 1024**2, "5MiB", "5MiB"),
        (500_000_000, "500MB", "476.84MiB"),
        (1_500_000, "1.5MB", "1.43MiB"),
        (1536 * 1024**2, "1.5GiB", "1.5GiB"),
        (1234567, "1234567B", "1.18MiB"),
    ],
)
def test_format_size(size: int, exact: str, rough: str) -> None:
    assert format_size(size) == exact
    assert format_size(size, exact=False) == rough


def test_format_size_refuses_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_size(-1)


@given(st.integers(min_value=1, max_value=2**70))
def test_format_then_parse_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "kb", "gib"]),
)
def test_unit_multiplies(number: int, unit: str) -> None:
    factor = {"b": 1, "kb": 1000, "mb": 10**6, "gb": 10**9, "kib": 1024, "mib": 1024**2}
    factor["gib"] = 1024**3
    assert parse_size(f"{number}{unit}") == number * factor[unit.lower()]
