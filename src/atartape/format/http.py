"""HTTP semantics of serving a tape, shared by the ASGI, Starlette and aiohttp front ends.

Pure functions and small immutable values, no I/O (think h11). The front ends only move bytes:

- :func:`plan_response` decides a response from a :class:`Representation` (the tape as HTTP
  describes it) and a :class:`Request` (the method and the header fields that matter): the
  preconditions of RFC 9110 section 13 (``If-Match``, ``If-Unmodified-Since``,
  ``If-None-Match``, ``If-Modified-Since``: 412 and 304), then ``Range`` and ``If-Range``
  (section 14: 206, one part or ``multipart/byteranges``, and 416).
- :func:`route` and :func:`recording_path` name each recording by a URL of its own
  (``/r/<identity>/<name>.tar``), the way :class:`atartape.asgi.TapeApp` serves it.
- What is described is the bytes sent: a tape's tar, or one of its views (``.tar.zst``,
  ``.tar.age``...: their own size, identity, name and media type), or a one-shot tape; one
  that plays only whole, once, says ``Accept-Ranges: none`` and ignores ``Range``.
- The parsers (:func:`parse_ranges`, :func:`parse_etags`, :func:`parse_http_date`) and
  formatters (:func:`http_date`, :func:`content_disposition`) never raise on what a client
  sends: a malformed field is ignored, or fails closed where ignoring it would be unsafe.

Several ranges are answered with ``multipart/byteranges`` when, once sorted and coalesced
(overlapping or adjacent ranges merged, as RFC 9110 section 14.2 allows), they make at most
:data:`MAX_PARTS` parts of at most :data:`MAX_MULTIPART_BYTES` in all; the parts go in
ascending order, each with its ``Content-Range``. More get the whole tape (200), which the RFC
also allows. Being small, a multipart body is read whole before its response starts, so it is
never cut short by a part that cannot play.
"""

from __future__ import annotations

import calendar
import email.utils
import enum
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar, Final, Literal
from urllib.parse import quote

from ..errors import InvalidArgumentError

__all__ = [
    "ALLOWED_METHODS",
    "ALLOW_HEADER",
    "ANY",
    "CONTENT_TYPE",
    "IMMUTABLE",
    "MAX_MULTIPART_BYTES",
    "MAX_PARTS",
    "NO_STORE",
    "RECORDING_PREFIX",
    "REVALIDATE",
    "UNSATISFIABLE",
    "ByteRange",
    "EntityTag",
    "Part",
    "Plan",
    "Representation",
    "Request",
    "Route",
    "Unsatisfiable",
    "coalesce",
    "content_disposition",
    "etag",
    "http_date",
    "if_range_matches",
    "method_allowed",
    "parse_etags",
    "parse_http_date",
    "parse_ranges",
    "plain_response",
    "plan_response",
    "preconditions",
    "recording_path",
    "redirect",
    "route",
]

CONTENT_TYPE: Final = "application/x-tar"
ALLOWED_METHODS: Final = ("GET", "HEAD")
ALLOW_HEADER: Final = ", ".join(ALLOWED_METHODS)

REVALIDATE: Final = "no-cache"
"""``Cache-Control`` of a URL whose recording can change (a plain URL): a cache may keep the
tape but must revalidate it (``ETag``) before every use, so it never serves an old recording."""
IMMUTABLE: Final = "max-age=31536000, immutable"
"""``Cache-Control`` of a URL that names one recording: its bytes never change."""
NO_STORE: Final = "no-store"
"""``Cache-Control`` of redirects and refusals, which hold for the moment only."""

MAX_PARTS: Final = 16
"""The most parts a ``multipart/byteranges`` response has (after coalescing); more: 200."""
MAX_MULTIPART_BYTES: Final = 256 * 1024
"""The most bytes of the tape a ``multipart/byteranges`` response holds; more: 200."""

RECORDING_PREFIX: Final = "/r/"

# RFC 5987 attr-char, besides letters and digits (which quote() never escapes).
_ATTR_CHARS: Final = "!#$&+-.^_`|~"
_DIGITS: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdef")
_BOUNDARY: Final = re.compile(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}")


class Unsatisfiable(enum.Enum):
    """The marker :func:`parse_ranges` returns for a range set that selects no byte (416)."""

    RANGE = "unsatisfiable"


UNSATISFIABLE: Final = Unsatisfiable.RANGE


# ----------------------------------------------------------------------------- Range


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


def _range_spec(spec: str, total: int) -> ByteRange | Unsatisfiable | None:
    """One range-spec of a ``bytes`` range set: the range, unsatisfiable, or ``None``
    (malformed)."""
    first_text, dash, last_text = spec.partition("-")
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


def parse_ranges(value: str | None, total: int) -> tuple[ByteRange, ...] | Unsatisfiable | None:
    """Evaluate a ``Range`` header against a representation of ``total`` bytes.

    Returns the satisfiable ranges in the order asked (unsatisfiable ones dropped, RFC 9110
    section 14.1.1), :data:`UNSATISFIABLE` when none is satisfiable (416), or ``None`` when the
    header is to be ignored and the whole representation sent (200): no header, a unit other
    than ``bytes``, or a malformed range set (RFC 9110 says to ignore it). Never raises.
    """
    if value is None or total <= 0:
        return None
    unit, sep, range_set = value.strip().partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    found: list[ByteRange] = []
    seen = False
    for spec in specs:
        if not spec:  # a recipient must accept empty list elements
            continue
        seen = True
        got = _range_spec(spec, total)
        if got is None:
            return None
        if got is not UNSATISFIABLE:
            found.append(got)
    if not seen:
        return None
    return tuple(found) if found else UNSATISFIABLE


def coalesce(ranges: tuple[ByteRange, ...]) -> tuple[ByteRange, ...]:
    """``ranges`` sorted, with overlapping or adjacent ones merged: the same bytes, each once."""
    merged: list[ByteRange] = []
    for item in sorted(ranges, key=lambda r: (r.start, r.end)):
        if merged and item.start <= merged[-1].end:
            if item.end > merged[-1].end:
                merged[-1] = ByteRange(merged[-1].start, item.end)
        else:
            merged.append(item)
    return tuple(merged)


# ----------------------------------------------------------------------------- validators


def etag(identity: str) -> str:
    """The strong entity tag of a tape: its recording identity, quoted."""
    return f'"{identity}"'


@dataclass(frozen=True, slots=True)
class EntityTag:
    """An entity tag as a client sent it: its opaque part (without quotes) and weakness."""

    opaque: str
    weak: bool = False

    def strong_match(self, other: EntityTag) -> bool:
        """RFC 9110 strong comparison: neither weak, and the same opaque part."""
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        """RFC 9110 weak comparison: the same opaque part, weak or not."""
        return self.opaque == other.opaque


ANY: Final = "*"
_TAG: Final = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')


def parse_etags(value: str) -> tuple[EntityTag, ...] | Literal["*"] | None:
    """An ``If-Match`` or ``If-None-Match`` value: :data:`ANY` (``*``), the entity tags it lists
    (empty list elements allowed), or ``None`` when it is malformed. Never raises."""
    if value.strip(" \t") == ANY:
        return ANY
    tags: list[EntityTag] = []
    at = 0
    while at < len(value):
        if value[at] in " \t,":
            at += 1
            continue
        found = _TAG.match(value, at)
        if found is None:
            return None
        tags.append(EntityTag(found.group(2), weak=found.group(1) is not None))
        at = found.end()
        if at < len(value) and value[at] != ",":
            return None
    return tuple(tags) if tags else None


def if_range_matches(value: str | None, current_etag: str) -> bool:
    """Whether an ``If-Range`` condition lets the ``Range`` header apply.

    Only a strong entity tag equal to ``current_etag`` does. A weak tag, a different tag, a date
    (a recording time is only a weak validator: two recordings can share a second) and garbage
    all mean "send it whole". ``None`` (no ``If-Range``) always matches.
    """
    if value is None:
        return True
    tags = parse_etags(value)
    current = parse_etags(current_etag)
    if not isinstance(tags, tuple) or len(tags) != 1 or not isinstance(current, tuple):
        return False
    return tags[0].strong_match(current[0])


_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF_FIXDATE: Final = re.compile(rf"{_WEEKDAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
_RFC850: Final = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-{_MONTH}-(\d\d) "
    rf"{_TIME} GMT"
)
_ASCTIME: Final = re.compile(rf"{_WEEKDAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(value: str) -> int | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as a POSIX timestamp; ``None`` if it is not one.

    Accepts the three formats a recipient must: IMF-fixdate (``Sun, 06 Nov 1994 08:49:37
    GMT``), the obsolete RFC 850 form (``Sunday, 06-Nov-94 08:49:37 GMT``; a two-digit year
    is 1970-2069) and asctime (``Sun Nov  6 08:49:37 1994``). Names are case-sensitive, the
    day name is not checked against the date, a leap second (60) counts as 59. Never raises.
    """
    text = value.strip(" \t")
    if found := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = found.groups()
    elif found := _RFC850.fullmatch(text):
        day, month, short_year, hour, minute, second = found.groups()
        year = str((1900 if int(short_year) >= 70 else 2000) + int(short_year))
    elif found := _ASCTIME.fullmatch(text):
        month, day, hour, minute, second, year = found.groups()
    else:
        return None
    try:
        moment = datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
            tzinfo=timezone.utc,
        )
    except ValueError:  # 31 Feb, hour 24, year 0...
        return None
    return calendar.timegm(moment.utctimetuple())


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
    name = _raw(filename).decode("utf-8", "replace")
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)
    value = f'attachment; filename="{fallback or "download"}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name.encode('utf-8'), safe=_ATTR_CHARS)}"
    return value


def _raw(name: str) -> bytes:
    """A name as UTF-8 bytes, keeping the bytes of one that came from the disk undecoded."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return name.encode("utf-8", "replace")


# ----------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request path points below a tape's root: ``"root"`` (the plain URL, which
    redirects to the current recording), ``"recording"`` (``/r/<identity>/<name>``) or
    ``"unknown"`` (404)."""

    kind: Literal["root", "recording", "unknown"]
    identity: str = ""


def recording_path(identity: str, filename: str) -> str:
    """The path, below the tape's root, that names recording ``identity`` offered as
    ``filename``: ``/r/<identity>/<filename, percent-encoded>``."""
    return f"{RECORDING_PREFIX}{identity}/{quote(_raw(filename), safe='')}"


def route(path: str) -> Route:
    """Where ``path`` (below the tape's root, percent-decoded) points. The name after the
    identity only names the download: any non-empty one is accepted."""
    if path in ("", "/"):
        return Route("root")
    if path.startswith(RECORDING_PREFIX):
        identity, slash, name = path[len(RECORDING_PREFIX) :].partition("/")
        if slash and name and len(identity) == 64 and _HEX.issuperset(identity):
            return Route("recording", identity)
    return Route("unknown")


# ----------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class Representation:
    """What a response needs to know about a tape, with its header values formatted once.

    ``total_size`` counts the bytes sent (a compressed or sealed view's, not the tar's);
    ``modified`` is the recording time in whole seconds (what ``Last-Modified`` says);
    ``cache_control`` is :data:`IMMUTABLE` at a URL that names the recording, else
    :data:`REVALIDATE`; ``content_type`` is the media type of the bytes (a tar:
    :data:`CONTENT_TYPE`). ``ranges`` is false for bytes that can only be sent whole, once (a
    one-shot tape holding streams): ``Range`` is then ignored and ``Accept-Ranges: none`` said.
    """

    total_size: int
    etag: str
    last_modified: str
    modified: int
    disposition: str
    cache_control: str = REVALIDATE
    content_type: str = CONTENT_TYPE
    ranges: bool = True

    @classmethod
    def describe(
        cls,
        *,
        total_size: int,
        identity: str,
        recorded_at: datetime,
        filename: str,
        cache_control: str = REVALIDATE,
        content_type: str = CONTENT_TYPE,
        ranges: bool = True,
    ) -> Representation:
        """``total_size`` bytes whose identity (strong validator) is ``identity``, offered as
        ``filename``. Raises ``ValueError`` for a ``content_type`` that cannot be put in a
        header (anything but printable ASCII)."""
        if recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=timezone.utc)
        if not content_type or not all(" " <= ch <= "~" for ch in content_type):
            raise InvalidArgumentError(f"{content_type!r} is not a media type a header can carry")
        return cls(
            total_size=total_size,
            etag=etag(identity),
            last_modified=http_date(recorded_at),
            modified=calendar.timegm(recorded_at.utctimetuple()),
            disposition=content_disposition(filename),
            cache_control=cache_control,
            content_type=content_type,
            ranges=ranges,
        )

    @property
    def tag(self) -> EntityTag:
        return EntityTag(self.etag.strip('"'))


@dataclass(frozen=True, slots=True)
class Request:
    """What a response depends on: the method and the raw values of the fields that matter
    (repeated fields joined with ``", "``; ``None``: absent)."""

    method: str = "GET"
    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
    )

    @classmethod
    def of(cls, method: str, fields: dict[str, str]) -> Request:
        """The request with ``method`` and ``fields`` (lower-case names; others ignored)."""
        return cls(method.upper(), *(fields.get(name) for name in cls.FIELDS))


@dataclass(frozen=True, slots=True)
class Part:
    """One window ``[start, end)`` of the tape in a body, after ``head`` (the boundary and
    the part's header fields of a multipart body, else empty)."""

    start: int
    end: int
    head: bytes = b""


@dataclass(frozen=True, slots=True)
class Plan:
    """A response decided: status, headers (lower-case names), and its body: each of
    ``parts`` (its head, then its window of the tape), then ``tail``. A response without
    content (HEAD, 304, 416) has neither. A body of several parts (``multipart``) is small:
    the front ends read it whole before the response starts."""

    status: int
    headers: tuple[tuple[str, str], ...]
    parts: tuple[Part, ...] = ()
    tail: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), ``None`` if absent."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def multipart(self) -> bool:
        return len(self.parts) > 1

    @property
    def body_length(self) -> int:
        """How many bytes the body has (what ``Content-Length`` says when there is a body)."""
        return sum(len(p.head) + p.end - p.start for p in self.parts) + len(self.tail)


def preconditions(rep: Representation, request: Request) -> int | None:
    """The status the preconditions of ``request`` answer (412 or 304), or ``None`` to go on.

    RFC 9110 section 13.2.2, in order: ``If-Match`` (strong comparison; ``*`` matches, a
    malformed value matches nothing) or, only without it, ``If-Unmodified-Since`` (ignored if
    not a date); then ``If-None-Match`` (weak comparison; 304 for GET and HEAD, 412 for other
    methods) or, only without it, ``If-Modified-Since`` (GET and HEAD only; ignored if not a
    date). Dates compare whole seconds with the recording time.
    """
    method = request.method.upper()
    if request.if_match is not None:
        if not _any_match(parse_etags(request.if_match), rep.tag, strong=True):
            return 412
    elif request.if_unmodified_since is not None:
        since = parse_http_date(request.if_unmodified_since)
        if since is not None and rep.modified > since:
            return 412
    if request.if_none_match is not None:
        if _any_match(parse_etags(request.if_none_match), rep.tag, strong=False):
            return 304 if method in ALLOWED_METHODS else 412
    elif request.if_modified_since is not None and method in ALLOWED_METHODS:
        since = parse_http_date(request.if_modified_since)
        if since is not None and rep.modified <= since:
            return 304
    return None


def _any_match(
    tags: tuple[EntityTag, ...] | Literal["*"] | None, current: EntityTag, *, strong: bool
) -> bool:
    """Whether a parsed ``If-Match``/``If-None-Match`` value matches ``current`` (``*``
    always does: a tape always has a current representation; a malformed value never)."""
    if tags is None:
        return False
    if tags == ANY:
        return True
    return any(t.strong_match(current) if strong else t.weak_match(current) for t in tags)


def plan_response(
    rep: Representation, request: Request | None = None, *, boundary: str | None = None
) -> Plan:
    """Decide the response to ``request`` (by default a plain GET) for ``rep``.

    First the preconditions (:func:`preconditions`: 412, or 304 with the validators and
    ``Cache-Control``); then, for GET only (RFC 9110 defines ``Range`` for GET), ``Range``
    unless ``If-Range`` does not match (strong comparison; a date never matches): 206 with one
    part, 206 ``multipart/byteranges`` for up to :data:`MAX_PARTS` coalesced parts (of at
    most :data:`MAX_MULTIPART_BYTES` in all) separated by ``boundary`` (by default one made
    from the ETag; pass a random one), 416 when no range is satisfiable; otherwise 200 with
    the whole tape. A representation without ``ranges`` ignores ``Range`` (200, whole, with
    ``Accept-Ranges: none``). HEAD gets the headers of the 200. The caller rejects methods
    other than GET and HEAD if it wants to (see :func:`method_allowed`).
    Raises ``ValueError`` only for a ``boundary`` RFC 2046 does not allow; never for anything
    a client sent.
    """
    request = request or Request()
    if boundary is not None and not _BOUNDARY.fullmatch(boundary):
        raise InvalidArgumentError(f"{boundary!r} is not a multipart boundary (RFC 2046)")
    total = rep.total_size
    method = request.method.upper()
    validators = (
        ("etag", rep.etag),
        ("last-modified", rep.last_modified),
        ("cache-control", rep.cache_control),
    )
    status = preconditions(rep, request)
    if status == 304:
        return Plan(304, (("etag", rep.etag), ("cache-control", rep.cache_control)))
    if status == 412:
        return plain_response(412, "Precondition Failed", cache_control=NO_STORE)
    accept_ranges = ("accept-ranges", "bytes" if rep.ranges else "none")
    wanted: tuple[ByteRange, ...] | Unsatisfiable | None = None
    if method == "GET" and rep.ranges and if_range_matches(request.if_range, rep.etag):
        wanted = parse_ranges(request.range, total)
    if wanted is UNSATISFIABLE:
        return Plan(
            416,
            (("content-range", f"bytes */{total}"), ("content-length", "0"), *validators),
        )
    parts = coalesce(wanted) if isinstance(wanted, tuple) else ()
    if len(parts) == 1:
        (only,) = parts
        return Plan(
            206,
            (
                ("content-type", rep.content_type),
                ("content-length", str(only.length)),
                ("content-range", only.content_range(total)),
                accept_ranges,
                *validators,
                ("content-disposition", rep.disposition),
            ),
            (Part(only.start, only.end),),
        )
    if 1 < len(parts) <= MAX_PARTS and sum(p.length for p in parts) <= MAX_MULTIPART_BYTES:
        return _multipart(rep, parts, boundary or f"tape-{rep.tag.opaque[:60]}", validators)
    return Plan(
        200,
        (
            ("content-type", rep.content_type),
            ("content-length", str(total)),
            accept_ranges,
            *validators,
            ("content-disposition", rep.disposition),
        ),
        () if method == "HEAD" else (Part(0, total),),
    )


def _multipart(
    rep: Representation,
    ranges: tuple[ByteRange, ...],
    boundary: str,
    validators: tuple[tuple[str, str], ...],
) -> Plan:
    """A 206 ``multipart/byteranges`` response of ``ranges`` (RFC 9110 section 14.6)."""
    parts = tuple(
        Part(
            r.start,
            r.end,
            (b"" if i == 0 else b"\r\n")
            + (
                f"--{boundary}\r\n"
                f"content-type: {rep.content_type}\r\n"
                f"content-range: {r.content_range(rep.total_size)}\r\n\r\n"
            ).encode("ascii"),
        )
        for i, r in enumerate(ranges)
    )
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    plan = Plan(206, (), parts, tail)
    headers = (
        ("content-type", f"multipart/byteranges; boundary={boundary}"),
        ("content-length", str(plan.body_length)),
        ("accept-ranges", "bytes"),
        *validators,
    )
    return Plan(206, headers, parts, tail)


def method_allowed(method: str) -> bool:
    """Whether ``method`` is one a tape answers (GET, HEAD); others get 405 with ``Allow``."""
    return method.upper() in ALLOWED_METHODS


def plain_response(status: int, message: str, **extra: str) -> Plan:
    """A short ``text/plain`` response (404, 405, 410, 412, 500...), ``message`` its body.

    ``extra`` adds headers, written with underscores for dashes (``allow="GET, HEAD"``).
    """
    body = message.encode("utf-8") + b"\n"
    headers = (
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        *((name.replace("_", "-").lower(), value) for name, value in extra.items()),
    )
    return Plan(status, headers, tail=body)


def redirect(location: str) -> Plan:
    """A 307 to ``location`` that no cache keeps (``Cache-Control: no-store``), without body:
    a client that does not follow it (``curl -o`` without ``-L``) writes nothing."""
    return Plan(
        307,
        (("location", location), ("content-length", "0"), ("cache-control", NO_STORE)),
    )
