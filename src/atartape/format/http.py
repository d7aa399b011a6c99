"""HTTP semantics of serving a tape, shared by the ASGI, Starlette and aiohttp front ends.

Pure functions and small immutable values, no I/O (think h11): parse ``Range`` and ``If-Range``
(RFC 9110 section 14), format the validators (``ETag``, ``Last-Modified``) and
``Content-Disposition`` (RFC 6266), and decide the status, headers and byte window of a response
with :func:`plan_response`. The front ends only move bytes.
"""

from __future__ import annotations

import email.utils
import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final
from urllib.parse import quote

CONTENT_TYPE: Final = "application/x-tar"
ALLOWED_METHODS: Final = ("GET", "HEAD")
ALLOW_HEADER: Final = ", ".join(ALLOWED_METHODS)

# RFC 5987 attr-char, besides letters and digits (which quote() never escapes).
_ATTR_CHARS: Final = "!#$&+-.^_`|~"
_DIGITS: Final = frozenset("0123456789")


class Unsatisfiable(enum.Enum):
    """The marker :func:`parse_range` returns for a range set that selects no byte (416)."""

    RANGE = "unsatisfiable"


UNSATISFIABLE: Final = Unsatisfiable.RANGE


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable byte range: ``[start, end)`` of a representation, ``end`` exclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, total: int) -> str:
        """The ``Content-Range`` value of a 206 response: ``bytes first-last/total``."""
        return f"bytes {self.start}-{self.end - 1}/{total}"


def _digits(text: str) -> str | None:
    """``text`` without leading zeros if it is 1*DIGIT, else ``None``."""
    if not text or not _DIGITS.issuperset(text):
        return None
    return text.lstrip("0") or "0"


def _capped(digits: str, cap: int) -> int:
    """A digit string as an int no larger than ``cap`` (huge values are never converted)."""
    return cap if len(digits) > len(str(cap)) else min(int(digits), cap)


def _before(a: str, b: str) -> bool:
    """Whether the number ``a`` is less than ``b`` (both digit strings without leading zeros)."""
    return (len(a), a) < (len(b), b)


def parse_range(value: str | None, total: int) -> ByteRange | Unsatisfiable | None:
    """Evaluate a ``Range`` header against a representation of ``total`` bytes.

    Returns the :class:`ByteRange` to send (206), :data:`UNSATISFIABLE` (416), or ``None`` when
    the whole representation is to be sent (200): no header, a unit other than ``bytes``, a
    malformed value (RFC 9110 says to ignore it), or several ranges (answered whole, as RFC 9110
    allows). Never raises.
    """
    if value is None or total <= 0:
        return None
    unit, sep, range_set = value.strip().partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]  # a recipient must accept empty list elements
    if len(specs) != 1:
        return None
    first_text, dash, last_text = specs[0].partition("-")
    if not dash:
        return None
    last = _digits(last_text)
    if not first_text:  # suffix-range: the last N bytes
        if last is None:
            return None
        if last == "0":
            return UNSATISFIABLE
        return ByteRange(max(0, total - _capped(last, total)), total)
    first = _digits(first_text)
    if first is None or (last_text and (last is None or _before(last, first))):
        return None  # malformed, or an int-range whose last-pos is before its first-pos
    start = _capped(first, total)
    if start >= total:
        return UNSATISFIABLE
    end = total if last is None else min(_capped(last, total - 1) + 1, total)
    return ByteRange(start, end)


def etag(identity: str) -> str:
    """The strong entity tag of a tape: its identity, quoted."""
    return f'"{identity}"'


def if_range_matches(value: str | None, current_etag: str) -> bool:
    """Whether an ``If-Range`` condition lets the ``Range`` header apply.

    Only a strong entity tag equal to ``current_etag`` does. A weak tag, a different tag, a date
    (a tape's recording time is not a strong validator) and garbage all mean "send it whole".
    ``None`` (no ``If-Range``) always matches.
    """
    if value is None:
        return True
    return value.strip() == current_etag


def http_date(moment: datetime) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``); a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return email.utils.format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` (RFC 6266): an ASCII fallback, plus ``filename*``.

    The quoted fallback keeps printable ASCII and turns anything else (non-ASCII, control
    characters, ``"``, ``\\`` and ``%``) into ``_``; when that changed the name, the exact name
    follows as ``filename*=UTF-8''...`` (RFC 8187 percent-encoding). The result is always safe
    to put in a header: printable ASCII only.
    """
    try:
        raw = filename.encode("utf-8", "surrogateescape")  # a name that came from the disk
    except UnicodeEncodeError:
        raw = filename.encode("utf-8", "replace")
    name = raw.decode("utf-8", "replace")
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    value = f'attachment; filename="{fallback or "download"}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name.encode('utf-8'), safe=_ATTR_CHARS)}"
    return value


@dataclass(frozen=True, slots=True)
class Representation:
    """What a response needs to know about a tape, with its header values formatted once."""

    total_size: int
    etag: str
    last_modified: str
    disposition: str

    @classmethod
    def describe(
        cls, *, total_size: int, identity: str, recorded_at: datetime, filename: str
    ) -> Representation:
        """A tape of ``total_size`` bytes whose recording is ``identity``, as ``filename``."""
        return cls(
            total_size=total_size,
            etag=etag(identity),
            last_modified=http_date(recorded_at),
            disposition=content_disposition(filename),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """A response decided: status, headers (lower-case names), and the window ``[start, end)``.

    ``send_body`` is false for HEAD and for responses without content (416): then the window
    is empty and only the headers go out.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    start: int = 0
    end: int = 0
    send_body: bool = True

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), ``None`` if absent."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


def plan_response(
    rep: Representation,
    *,
    method: str = "GET",
    range_header: str | None = None,
    if_range: str | None = None,
) -> Plan:
    """Decide the response to a request for ``rep``; never raises.

    GET: 200 with the whole tape, 206 with one range, 416 when the range is unsatisfiable.
    ``Range`` is ignored when ``If-Range`` does not match (strong ETag comparison), and for any
    method but GET (RFC 9110 defines it for GET only): HEAD gets the headers of a 200. The
    caller rejects methods other than GET and HEAD if it wants to (see :func:`method_allowed`).
    """
    total = rep.total_size
    validators = (
        ("accept-ranges", "bytes"),
        ("etag", rep.etag),
        ("last-modified", rep.last_modified),
    )
    wanted: ByteRange | Unsatisfiable | None = None
    if method.upper() == "GET" and if_range_matches(if_range, rep.etag):
        wanted = parse_range(range_header, total)
    if wanted is UNSATISFIABLE:
        return Plan(
            416,
            (("content-range", f"bytes */{total}"), ("content-length", "0"), *validators),
            send_body=False,
        )
    described = (
        ("content-type", CONTENT_TYPE),
        *validators,
        ("content-disposition", rep.disposition),
    )
    head = method.upper() == "HEAD"
    if isinstance(wanted, ByteRange):
        return Plan(
            206,
            (
                ("content-length", str(wanted.length)),
                ("content-range", wanted.content_range(total)),
                *described,
            ),
            wanted.start,
            wanted.end,
        )
    return Plan(
        200,
        (("content-length", str(total)), *described),
        0,
        0 if head else total,
        send_body=not head,
    )


def method_allowed(method: str) -> bool:
    """Whether ``method`` is one a tape answers (GET, HEAD); others get 405 with ``Allow``."""
    return method.upper() in ALLOWED_METHODS


def plain_response(status: int, message: str, **extra: str) -> tuple[Plan, bytes]:
    """A short ``text/plain`` response (404, 405, 500...) and its body.

    ``extra`` adds headers, written with underscores for dashes (``allow="GET, HEAD"``).
    """
    body = message.encode("utf-8") + b"\n"
    headers = (
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        *((name.replace("_", "-").lower(), value) for name, value in extra.items()),
    )
    return Plan(status, headers, 0, 0, send_body=False), body
