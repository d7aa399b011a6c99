"""Byte sizes written by people: ``"500MB"``, ``"64MiB"``, ``1_048_576``.

Pure functions, no I/O. Decimal units (``kB``/``KB``, ``MB``, ``GB``, ``TB``, ``PB``) are powers
of 1000, binary units (``KiB``, ``MiB``, ``GiB``, ``TiB``, ``PiB``) powers of 1024, as the IEC
and SI define them. Units are matched without regard to case; ``B`` alone means bytes. A bare
``K``, ``M`` or ``G`` is refused: it is exactly the ambiguity the two families exist to avoid.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ..errors import InvalidArgumentError

__all__ = ["format_size", "parse_size"]

_DECIMAL = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5}
_BINARY = {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4, "PIB": 1024**5}
_UNITS = {**_DECIMAL, **_BINARY}
_SPELLING = {
    "B": "B",
    "KB": "KB",
    "MB": "MB",
    "GB": "GB",
    "TB": "TB",
    "PB": "PB",
    "KIB": "KiB",
    "MIB": "MiB",
    "GIB": "GiB",
    "TIB": "TiB",
    "PIB": "PiB",
}
_PATTERN = re.compile(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_EXAMPLES = "an int of bytes or a string such as '500MB', '1GB', '64MiB' or '1.5GiB'"


def parse_size(value: int | str, *, what: str = "size") -> int:
    """The number of bytes ``value`` stands for: a positive int, or a number with a unit.

    ``"500MB"`` is 500 000 000, ``"64MiB"`` is 67 108 864, ``"1.5GiB"`` is 1 610 612 736 and
    ``"4096"`` is 4096. ``what`` names the value in error messages (``"volume size"``).

    Raises :class:`ValueError` for anything else: zero or a negative number, an unknown or
    ambiguous unit (``"5M"``), a fraction of a byte (``"1.5B"``), a bool, a float, or a string
    that is not a number with a unit. Every message quotes the value and says what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgumentError(
            f"{what} must be {_EXAMPLES}, not {type(value).__name__} {value!r}"
        )
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgumentError(f"{what} must be a positive number of bytes, not {value}")
        return value
    match = _PATTERN.fullmatch(value)
    if match is None and value.strip().startswith("-"):
        raise InvalidArgumentError(f"{what} must be a positive number of bytes, not {value!r}")
    if match is None:
        raise InvalidArgumentError(f"{what} {value!r} is not a size: expected {_EXAMPLES}")
    number_text, unit_text = match.groups()
    unit = unit_text.upper() or "B"
    if unit not in _UNITS:
        hint = ""
        if unit in ("K", "M", "G", "T", "P"):
            hint = f" (ambiguous: write {unit}B for powers of 1000 or {unit}iB for powers of 1024)"
        raise InvalidArgumentError(
            f"{what} {value!r} has an unknown unit {unit_text!r}{hint}; "
            "known units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB"
        )
    try:
        number = Decimal(number_text.replace("_", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only lets digits through
        raise InvalidArgumentError(
            f"{what} {value!r} is not a size: expected {_EXAMPLES}"
        ) from None
    exact = number * _UNITS[unit]
    if exact != exact.to_integral_value():
        raise InvalidArgumentError(f"{what} {value!r} is not a whole number of bytes ({exact})")
    size = int(exact)
    if size <= 0:
        raise InvalidArgumentError(f"{what} must be a positive number of bytes, not {value!r}")
    return size


def format_size(size: int, *, exact: bool = True) -> str:
    """A short human form of ``size`` bytes.

    With ``exact`` (the default) the result parses back to the same number
    (``parse_size(format_size(n)) == n``): the largest unit, binary or decimal, that expresses
    ``size`` with at most three decimals, and a fraction only below 1000 of the unit
    (``"64MiB"``, ``"500MB"``, ``"1.5GiB"``), else plain bytes (``"1234567B"``). With
    ``exact=False`` it is a rounded binary figure for display (``"1.18MiB"``). Raises
    :class:`ValueError` for a negative size or a non-int.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgumentError(f"size must be a non-negative int of bytes, not {size!r}")
    if not exact:
        for unit in ("PIB", "TIB", "GIB", "MIB", "KIB"):
            if size >= _BINARY[unit]:
                text = f"{size / _BINARY[unit]:.2f}".rstrip("0").rstrip(".")
                return f"{text}{_SPELLING[unit]}"
        return f"{size}B"
    for unit, factor in sorted(_UNITS.items(), key=lambda item: item[1], reverse=True):
        if factor == 1 or size < factor or (size * 1000) % factor:
            continue
        whole, thousandths = divmod(size * 1000 // factor, 1000)
        if thousandths and whole >= 1000:
            continue  # "1234.567KB" reads worse than the plain number of bytes
        fraction = f".{thousandths:03d}".rstrip("0") if thousandths else ""
        return f"{whole}{fraction}{_SPELLING[unit]}"
    return f"{size}B"
