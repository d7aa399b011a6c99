"""The HTTP semantics of serving a tape (atartape.format.http): pure, checked exhaustively."""

from __future__ import annotations

import calendar
import email.utils
import itertools
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atartape.format import http as _http
from atartape.format.http import (
    ANY,
    MAX_PARTS,
    UNSATISFIABLE,
    ByteRange,
    EntityTag,
    Request,
    coalesce,
    parse_etags,
    parse_http_date,
    parse_ranges,
    plan_response,
)

TOTAL = 10_240
IDENTITY = "ab" * 32
RECORDED = datetime(2024, 5, 6, 7, 8, 9, 999_000, tzinfo=timezone.utc)
LM = calendar.timegm(RECORDED.utctimetuple())  # 1714979289


def make_rep(
    name: str = "dataset",
    total: int = TOTAL,
    filename: str | None = None,
    cache_control: str = _http.REVALIDATE,
) -> _http.Representation:
    return _http.Representation.describe(
        total_size=total,
        identity=IDENTITY,
        recorded_at=RECORDED,
        filename=filename or f"{name}.tar",
        cache_control=cache_control,
    )


REP = make_rep()
ETAG = f'"{IDENTITY}"'


def get(**fields: str | None) -> Request:
    return Request("GET", **fields)


def window(plan: _http.Plan) -> tuple[int, int]:
    """The one window of the tape a plan sends."""
    (part,) = plan.parts
    assert part.head == b""
    return part.start, part.end


def headers(plan: _http.Plan) -> dict[str, str]:
    names = [name for name, _ in plan.headers]
    assert len(names) == len(set(names)), "a header is repeated"
    assert all(name == name.lower() for name in names)
    return dict(plan.headers)


# ----------------------------------------------------------------------------- Range


def R(*pairs: tuple[int, int]) -> tuple[ByteRange, ...]:
    return tuple(ByteRange(a, b) for a, b in pairs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-0", R((0, 1))),
        ("bytes=0-99", R((0, 100))),
        ("bytes=100-", R((100, TOTAL))),
        ("bytes=-100", R((TOTAL - 100, TOTAL))),
        ("bytes=-99999999", R((0, TOTAL))),  # longer than the tape: all of it
        ("bytes=10239-", R((10239, TOTAL))),
        ("bytes=10239-10239", R((10239, TOTAL))),
        ("bytes=5000-999999", R((5000, TOTAL))),  # last-pos past the end is clipped
        ("bytes=0-" + "9" * 5000, R((0, TOTAL))),  # a huge number is never converted
        ("BYTES=1-2", R((1, 3))),  # the unit is case-insensitive
        ("  bytes=1-2  ", R((1, 3))),
        ("bytes= 1-2 ", R((1, 3))),  # optional whitespace around list elements
        ("bytes=1-2,", R((1, 3))),  # empty list elements are accepted
        ("bytes=, ,1-2", R((1, 3))),
        ("bytes=007-008", R((7, 9))),
        # several ranges, in the order asked; unsatisfiable ones dropped
        ("bytes=0-1,5-6", R((0, 2), (5, 7))),
        ("bytes=5-6,0-1", R((5, 7), (0, 2))),
        ("bytes=0-1, -5", R((0, 2), (TOTAL - 5, TOTAL))),
        ("bytes=0-1,10240-", R((0, 2))),
        ("bytes=10240-,\t-0, 3-", R((3, TOTAL))),
        # unsatisfiable: 416
        ("bytes=10240-", UNSATISFIABLE),
        ("bytes=10240-20000", UNSATISFIABLE),
        ("bytes=" + "9" * 5000 + "-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=-000", UNSATISFIABLE),
        ("bytes=10240-,-0", UNSATISFIABLE),
        # ignored (malformed, another unit): the whole tape, 200
        (None, None),
        ("", None),
        ("bytes", None),
        ("bytes=", None),
        ("bytes=,", None),
        ("bytes=-", None),
        ("bytes=5", None),
        ("bytes=a-b", None),
        ("bytes=1-a", None),
        ("bytes=--5", None),
        ("bytes=+1-2", None),
        ("bytes=1 -2", None),
        ("bytes=1-2-3", None),
        ("bytes=5-4", None),  # last-pos before first-pos: invalid, ignored
        ("bytes=0-1,5-4", None),  # one invalid spec invalidates the set
        ("bytes=" + "9" * 31 + "-" + "9" * 30, None),  # invalid even when both are huge
        ("items=0-5", None),
        ("bytes 0-5", None),
        ("bytes=0-1;2-3", None),
        ("bytes=١-٢", None),  # Arabic-Indic digits are not DIGIT  # noqa: RUF001
        ("bytes=½-", None),
    ],
)
def test_parse_ranges_table(value: str | None, expected: object) -> None:
    assert parse_ranges(value, TOTAL) == expected


def test_parse_ranges_empty_representation_ignores_range() -> None:
    assert parse_ranges("bytes=0-5", 0) is None
    assert parse_ranges("bytes=-5", 0) is None


@given(
    total=st.integers(1, 2**50),
    first=st.integers(0, 2**52),
    length=st.integers(0, 2**52),
    zeros=st.integers(0, 3),
)
def test_int_range_against_oracle(total: int, first: int, length: int, zeros: int) -> None:
    last = first + length
    pad = "0" * zeros
    got = parse_ranges(f"bytes={pad}{first}-{pad}{last}", total)
    if first >= total:
        assert got is UNSATISFIABLE
    else:
        assert got == R((first, min(last, total - 1) + 1))
    open_ended = parse_ranges(f"bytes={first}-", total)
    assert open_ended == (UNSATISFIABLE if first >= total else R((first, total)))
    if length > 0:  # last-pos before first-pos: ignored, never an error
        assert parse_ranges(f"bytes={last}-{first}", total) is None


@given(total=st.integers(1, 2**50), suffix=st.integers(0, 2**52))
def test_suffix_range_against_oracle(total: int, suffix: int) -> None:
    got = parse_ranges(f"bytes=-{suffix}", total)
    if suffix == 0:
        assert got is UNSATISFIABLE
    else:
        assert got == R((total - min(suffix, total), total))


spec_strategy = st.one_of(
    st.tuples(st.integers(0, 300), st.one_of(st.none(), st.integers(0, 300))),
    st.tuples(st.none(), st.integers(0, 300)),
)


def spec_text(spec: tuple[int | None, int | None]) -> str:
    first, last = spec
    return f"{'' if first is None else first}-{'' if last is None else last}"


def spec_bytes(spec: tuple[int | None, int | None], total: int) -> set[int] | None:
    """Oracle: the byte positions one spec selects (None: the spec is invalid)."""
    first, last = spec
    if first is None:
        assert last is not None
        return set(range(max(0, total - last), total))
    if last is not None and last < first:
        return None
    return set(range(first, min(total, (total if last is None else last + 1))))


@given(specs=st.lists(spec_strategy, min_size=1, max_size=8), total=st.integers(1, 250))
def test_range_sets_against_oracle(specs: list[tuple[int | None, int | None]], total: int) -> None:
    got = parse_ranges("bytes=" + ", ".join(map(spec_text, specs)), total)
    selected = [spec_bytes(spec, total) for spec in specs]
    if any(s is None for s in selected):
        assert got is None
        return
    wanted = set().union(*selected)  # type: ignore[arg-type]
    if not wanted:
        assert got is UNSATISFIABLE
        return
    assert isinstance(got, tuple)
    assert set().union(*(range(r.start, r.end) for r in got)) == wanted
    # In the order asked: each range is one of the specs, the empty ones dropped.
    assert [set(range(r.start, r.end)) for r in got] == [s for s in selected if s]


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(1, 100)), max_size=30))
def test_coalesce(pairs: list[tuple[int, int]]) -> None:
    ranges = tuple(ByteRange(a, a + n) for a, n in pairs)
    merged = coalesce(ranges)
    covered = set().union(*(range(r.start, r.end) for r in ranges))
    assert set().union(*(range(r.start, r.end) for r in merged)) == covered
    for before, after in itertools.pairwise(merged):
        assert before.end < after.start  # sorted, neither overlapping nor adjacent
    assert all(r.length > 0 for r in merged)
    assert coalesce(merged) == merged


@given(value=st.text(max_size=40), total=st.integers(0, 10**6))
def test_parse_ranges_never_raises_and_stays_inside(value: str, total: int) -> None:
    got = parse_ranges(value, total)
    if isinstance(got, tuple):
        assert got
        for r in got:
            assert 0 <= r.start < r.end <= total
            assert r.length == r.end - r.start


@given(
    value=st.from_regex(
        r"bytes=[0-9]{0,4}-[0-9]{0,4}(, ?[0-9]{0,4}-[0-9]{0,4}){0,2}", fullmatch=True
    )
)
def test_parse_ranges_grammar_fuzz(value: str) -> None:
    got = parse_ranges(value, 5000)
    specs = [s.strip() for s in value[len("bytes=") :].split(",") if s.strip()]
    if "-" in specs:
        assert got is None
    elif isinstance(got, tuple):
        assert len(got) <= len(specs)
        assert all(0 <= r.start < r.end <= 5000 for r in got)


# ----------------------------------------------------------------------------- entity tags


def test_etag_is_strong_and_quoted() -> None:
    assert _http.etag(IDENTITY) == ETAG
    assert REP.etag == ETAG
    assert REP.tag == EntityTag(IDENTITY)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", ANY),
        (" * ", ANY),
        ('"a"', (EntityTag("a"),)),
        ('W/"a"', (EntityTag("a", weak=True),)),
        ('"a", W/"b" ,"c"', (EntityTag("a"), EntityTag("b", True), EntityTag("c"))),
        (',"a",,', (EntityTag("a"),)),  # empty list elements
        ('""', (EntityTag(""),)),
        ('"x\x80\xff"', (EntityTag("x\x80\xff"),)),  # obs-text
        ('"a,b"', (EntityTag("a,b"),)),  # a comma inside the quotes belongs to the tag
        ("", None),
        ("a", None),  # unquoted
        ('w/"a"', None),  # W/ is case-sensitive
        ('W/ "a"', None),
        ('"a" "b"', None),
        ('"a', None),
        ('"a b"', None),  # a space is not etagc
        ('"a"x', None),
        ('*, "a"', None),  # * stands alone
    ],
)
def test_parse_etags_table(value: str, expected: object) -> None:
    assert parse_etags(value) == expected


@given(st.text(max_size=30))
def test_parse_etags_never_raises(value: str) -> None:
    got = parse_etags(value)
    assert got is None or got == ANY or (isinstance(got, tuple) and got)


@given(st.lists(st.tuples(st.text("abcXYZ!#~\x80", max_size=6), st.booleans()), min_size=1))
def test_parse_etags_round_trip(tags: list[tuple[str, bool]]) -> None:
    value = " , ".join(f'{"W/" if weak else ""}"{opaque}"' for opaque, weak in tags)
    assert parse_etags(value) == tuple(EntityTag(o, w) for o, w in tags)


def test_comparisons() -> None:  # RFC 9110 section 8.8.3.2, the table
    w1, w2, s1 = EntityTag("1", True), EntityTag("2", True), EntityTag("1")
    assert not w1.strong_match(w1) and w1.weak_match(w1)
    assert not w1.strong_match(w2) and not w1.weak_match(w2)
    assert not w1.strong_match(s1) and w1.weak_match(s1)
    assert s1.strong_match(s1) and s1.weak_match(s1)


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        (None, True),
        (ETAG, True),
        (f" {ETAG} ", True),
        (f"W/{ETAG}", False),  # weak tags never match (strong comparison)
        ('"someone-else"', False),
        (f'{ETAG}, "other"', False),  # one entity tag, not a list
        (IDENTITY, False),  # unquoted: not an entity tag
        ("Mon, 06 May 2024 07:08:09 GMT", False),  # a date: send it whole
        ("", False),
        ("garbage", False),
    ],
)
def test_if_range(value: str | None, matches: bool) -> None:
    assert _http.if_range_matches(value, REP.etag) is matches


# ----------------------------------------------------------------------------- dates


def test_http_date() -> None:
    assert _http.http_date(RECORDED) == "Mon, 06 May 2024 07:08:09 GMT"
    assert REP.last_modified == "Mon, 06 May 2024 07:08:09 GMT"
    assert REP.modified == LM
    paris = RECORDED.astimezone(timezone(timedelta(hours=2)))
    assert _http.http_date(paris) == "Mon, 06 May 2024 07:08:09 GMT"
    assert _http.http_date(RECORDED.replace(tzinfo=None)) == "Mon, 06 May 2024 07:08:09 GMT"


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_http_date_round_trip(moment: datetime) -> None:
    text = _http.http_date(moment)
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", text)
    parsed = email.utils.parsedate_to_datetime(text)
    assert parsed == moment.replace(microsecond=0, tzinfo=timezone.utc)
    assert parse_http_date(text) == calendar.timegm(moment.utctimetuple())


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2069, 12, 31)))
def test_obsolete_date_formats(moment: datetime) -> None:
    expected = calendar.timegm(moment.utctimetuple())
    rfc850 = moment.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    asctime = f"{moment:%a %b} {moment.day:2d} {moment:%H:%M:%S %Y}"
    assert parse_http_date(rfc850) == expected
    assert parse_http_date(asctime) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777),
        ("Sun Nov  6 08:49:37 1994", 784111777),
        (" Sun, 06 Nov 1994 08:49:37 GMT\t", 784111777),
        ("Mon, 06 Nov 1994 08:49:37 GMT", 784111777),  # the day name is not checked
        ("Sun, 06 Nov 1994 08:49:60 GMT", 784111799),  # a leap second counts as :59
        ("Thursday, 01-Jan-70 00:00:00 GMT", 0),
        ("Wednesday, 31-Dec-69 00:00:00 GMT", 3155673600),  # two digits: 1970-2069
        ("sun, 06 nov 1994 08:49:37 gmt", None),  # case-sensitive
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 6 Nov 1994 08:49:37 GMT", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None),  # two
        ("784111777", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_http_date_table(value: str, expected: int | None) -> None:
    assert parse_http_date(value) == expected


@given(st.text(max_size=40))
def test_parse_http_date_never_raises(value: str) -> None:
    got = parse_http_date(value)
    assert got is None or isinstance(got, int)


# ----------------------------------------------------------------------------- Content-Disposition


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dataset.tar", 'attachment; filename="dataset.tar"'),
        ("my data.tar", 'attachment; filename="my data.tar"'),
        ("données.tar", "attachment; filename=\"donn_es.tar\"; filename*=UTF-8''donn%C3%A9es.tar"),
        ("日本.tar", "attachment; filename=\"__.tar\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.tar"),
        ('a"b.tar', "attachment; filename=\"a_b.tar\"; filename*=UTF-8''a%22b.tar"),
        ("a\\b.tar", "attachment; filename=\"a_b.tar\"; filename*=UTF-8''a%5Cb.tar"),
        ("50%.tar", "attachment; filename=\"50_.tar\"; filename*=UTF-8''50%25.tar"),
        ("x\r\nSet-Cookie: y", "attachment; filename=\"x__Set-Cookie: y\"; "
         "filename*=UTF-8''x%0D%0ASet-Cookie%3A%20y"),
        ("", 'attachment; filename="download"'),
        ("caf\udce9.tar",  # a name from the disk that is not UTF-8 (surrogateescape)
         "attachment; filename=\"caf_.tar\"; filename*=UTF-8''caf%EF%BF%BD.tar"),
        ("lone\ud800.tar", 'attachment; filename="lone?.tar"'),  # unencodable: replaced
    ],
)  # fmt: skip
def test_content_disposition_table(name: str, expected: str) -> None:
    assert _http.content_disposition(name) == expected


@given(st.text(max_size=30))
def test_content_disposition_is_header_safe_and_exact(name: str) -> None:
    value = _http.content_disposition(name)
    assert all(" " <= ch <= "~" for ch in value)  # printable ASCII: no injection, latin-1 safe
    match = re.fullmatch(r'attachment; filename="([^"\\]*)"(?:; filename\*=UTF-8\'\'(\S+))?', value)
    assert match is not None
    fallback, encoded = match.groups()
    if encoded is None:
        assert fallback == (name or "download")
    else:
        assert unquote(encoded, errors="strict") == name
        assert re.fullmatch(r"[A-Za-z0-9!#$&+\-.^_`|~%]+", encoded)


def test_representation_defaults_and_filename() -> None:
    assert REP.total_size == TOTAL
    assert REP.disposition == 'attachment; filename="dataset.tar"'
    assert REP.cache_control == "no-cache"
    named = make_rep(filename="export.tar")
    assert named.disposition == 'attachment; filename="export.tar"'
    accented = make_rep("é")
    assert "filename*=UTF-8''%C3%A9.tar" in accented.disposition
    naive = _http.Representation.describe(
        total_size=1, identity=IDENTITY, recorded_at=RECORDED.replace(tzinfo=None), filename="x"
    )
    assert naive.modified == LM


# ----------------------------------------------------------------------------- URLs


def test_recording_path_and_route() -> None:
    path = _http.recording_path(IDENTITY, "dataset.tar")
    assert path == f"/r/{IDENTITY}/dataset.tar"
    assert _http.route(path) == _http.Route("recording", IDENTITY)
    assert _http.recording_path(IDENTITY, "my data/é.tar").endswith("/my%20data%2F%C3%A9.tar")
    assert _http.route(f"/r/{IDENTITY}/my data/é.tar") == _http.Route("recording", IDENTITY)
    for root in ("", "/"):
        assert _http.route(root) == _http.Route("root")
    for unknown in (
        "/x",
        "/r/",
        f"/r/{IDENTITY}",
        f"/r/{IDENTITY}/",
        f"/r/{IDENTITY[:-1]}/x.tar",
        f"/r/{IDENTITY.upper()}/x.tar",
        f"/r/{IDENTITY}0/x.tar",
        "/r/" + "g" * 64 + "/x.tar",
        f"//r/{IDENTITY}/x.tar",
    ):
        assert _http.route(unknown) == _http.Route("unknown"), unknown


@given(identity=st.text("0123456789abcdef", min_size=64, max_size=64), name=st.text(min_size=1))
def test_recording_path_round_trip(identity: str, name: str) -> None:
    path = _http.recording_path(identity, name)
    assert re.fullmatch(r"/r/[0-9a-f]{64}/[A-Za-z0-9%._~-]+", path)  # a plain ASCII path
    decoded = unquote(path, errors="surrogateescape")
    assert _http.route(decoded) == _http.Route("recording", identity)


def test_redirect() -> None:
    plan = _http.redirect("/data/r/x/y.tar")
    assert plan.status == 307 and not plan.parts and plan.tail == b""
    assert headers(plan) == {
        "location": "/data/r/x/y.tar",
        "content-length": "0",
        "cache-control": "no-store",
    }


# ----------------------------------------------------------------------------- plan_response


def test_plan_whole() -> None:
    plan = plan_response(REP)
    assert plan.status == 200 and window(plan) == (0, TOTAL) and plan.tail == b""
    assert headers(plan) == {
        "content-type": "application/x-tar",
        "content-length": str(TOTAL),
        "accept-ranges": "bytes",
        "etag": REP.etag,
        "last-modified": REP.last_modified,
        "cache-control": "no-cache",
        "content-disposition": 'attachment; filename="dataset.tar"',
    }
    assert plan.header("Content-Length") == str(TOTAL) and plan.body_length == TOTAL
    assert plan.header("content-range") is None
    immutable = plan_response(make_rep(cache_control=_http.IMMUTABLE))
    assert immutable.header("cache-control") == "max-age=31536000, immutable"


def test_plan_head_has_the_headers_of_get_and_no_body() -> None:
    head = plan_response(REP, Request("HEAD"))
    assert (head.status, head.parts, head.tail) == (200, (), b"")
    assert head.headers == plan_response(REP).headers
    # Range is defined for GET only: HEAD ignores it (RFC 9110 14.2).
    assert plan_response(REP, Request("head", range="bytes=0-9")).headers == head.headers


def test_plan_partial() -> None:
    plan = plan_response(REP, get(range="bytes=100-199"))
    assert plan.status == 206 and window(plan) == (100, 200)
    found = headers(plan)
    assert found["content-range"] == f"bytes 100-199/{TOTAL}"
    assert found["content-length"] == "100"
    assert found["etag"] == REP.etag and found["content-type"] == "application/x-tar"
    assert "content-disposition" in found and found["accept-ranges"] == "bytes"
    assert found["cache-control"] == REP.cache_control
    suffix = plan_response(REP, get(range="bytes=-10"))
    assert window(suffix) == (TOTAL - 10, TOTAL)
    assert suffix.header("content-range") == f"bytes {TOTAL - 10}-{TOTAL - 1}/{TOTAL}"
    # Overlapping ranges coalesce into one part.
    merged = plan_response(REP, get(range="bytes=10-19,15-29,30-39"))
    assert merged.status == 206 and window(merged) == (10, 40)


def test_plan_unsatisfiable() -> None:
    plan = plan_response(REP, get(range=f"bytes={TOTAL}-"))
    assert (plan.status, plan.parts, plan.tail) == (416, (), b"")
    assert headers(plan) == {
        "content-range": f"bytes */{TOTAL}",
        "content-length": "0",
        "etag": REP.etag,
        "last-modified": REP.last_modified,
        "cache-control": "no-cache",
    }


def parse_multipart(plan: _http.Plan, tape: bytes) -> list[tuple[str, str, bytes]]:
    """Build the body a plan describes and read it back as a client would (RFC 9110 14.6,
    RFC 2046): [(content-type, content-range, bytes)] of each part."""
    body = b"".join(p.head + tape[p.start : p.end] for p in plan.parts) + plan.tail
    assert len(body) == int(headers(plan)["content-length"]) == plan.body_length
    kind, _, boundary = headers(plan)["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges"
    delimiter = b"\r\n--" + boundary.encode()
    chunks = (b"\r\n" + body).split(delimiter)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"  # no preamble; the close delimiter
    found = []
    for chunk in chunks[1:-1]:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in head[2:].split(b"\r\n"))
        found.append((fields[b"content-type"].decode(), fields[b"content-range"].decode(), content))
    return found


def test_plan_multipart() -> None:
    tape = bytes(i % 251 for i in range(TOTAL))
    plan = plan_response(REP, get(range="bytes=500-599, 0-9, -10, 5-12"), boundary="b0undary")
    assert plan.status == 206
    found = headers(plan)
    assert found["content-type"] == "multipart/byteranges; boundary=b0undary"
    assert found["etag"] == REP.etag and found["accept-ranges"] == "bytes"
    assert "content-range" not in found
    assert (
        parse_multipart(plan, tape)
        == [  # sorted, overlapping ranges coalesced
            ("application/x-tar", f"bytes 0-12/{TOTAL}", tape[0:13]),
            ("application/x-tar", f"bytes 500-599/{TOTAL}", tape[500:600]),
            ("application/x-tar", f"bytes {TOTAL - 10}-{TOTAL - 1}/{TOTAL}", tape[-10:]),
        ]
    )
    # A default boundary made from the ETag.
    assert "boundary=tape-abab" in str(plan_response(REP, get(range="bytes=0-0,2-2")).headers)
    with pytest.raises(ValueError, match="boundary"):
        plan_response(REP, boundary="no spaces allowed ")
    with pytest.raises(ValueError, match="boundary"):
        plan_response(REP, boundary="x" * 71)


def test_plan_too_many_bytes_is_whole() -> None:
    rep = make_rep(total=10 * _http.MAX_MULTIPART_BYTES)
    half = _http.MAX_MULTIPART_BYTES // 2
    fits = plan_response(rep, get(range=f"bytes=0-{half - 1},{2 * half}-{3 * half - 1}"))
    assert fits.status == 206 and fits.multipart
    over = plan_response(rep, get(range=f"bytes=0-{half - 1},{2 * half}-{3 * half}"))
    assert over.status == 200 and window(over) == (0, rep.total_size) and not over.multipart


def test_plan_too_many_parts_is_whole() -> None:
    spread = "bytes=" + ",".join(f"{i * 100}-{i * 100}" for i in range(MAX_PARTS))
    assert len(plan_response(REP, get(range=spread)).parts) == MAX_PARTS
    more = "bytes=" + ",".join(f"{i * 100}-{i * 100}" for i in range(MAX_PARTS + 1))
    plan = plan_response(REP, get(range=more))
    assert plan.status == 200 and window(plan) == (0, TOTAL)
    # Coalesced first: many overlapping ranges make one part.
    many = "bytes=" + ",".join(f"{i}-{i + 10}" for i in range(100))
    assert window(plan_response(REP, get(range=many))) == (0, 110)


@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=MAX_PARTS + 4),
    total=st.integers(1, 400),
)
def test_plan_ranges_property(specs: list[tuple[int | None, int | None]], total: int) -> None:
    tape = bytes((i * 7) % 256 for i in range(total))
    rep = make_rep(total=total)
    plan = plan_response(rep, get(range="bytes=" + ",".join(map(spec_text, specs))))
    selected = [spec_bytes(spec, total) for spec in specs]
    if any(s is None for s in selected):
        assert plan.status == 200
        return
    wanted = set().union(*selected)  # type: ignore[arg-type]
    if not wanted:
        assert plan.status == 416
        return
    if plan.status == 200:
        parts = coalesce(parse_ranges(plan_range(specs), total))  # type: ignore[arg-type]
        assert len(parts) > MAX_PARTS or sum(p.length for p in parts) > _http.MAX_MULTIPART_BYTES
        return
    assert plan.status == 206
    if len(plan.parts) == 1:
        start, end = window(plan)
        assert set(range(start, end)) == wanted
        return
    covered: set[int] = set()
    for kind, content_range, content in parse_multipart(plan, tape):
        first, last, whole = map(int, re.findall(r"\d+", content_range))
        assert kind == "application/x-tar" and whole == total
        assert content == tape[first : last + 1]
        covered |= set(range(first, last + 1))
    assert covered == wanted


def plan_range(specs: list[tuple[int | None, int | None]]) -> str:
    return "bytes=" + ",".join(map(spec_text, specs))


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (None, 206),
        (ETAG, 206),
        ('"an-older-tape"', 200),
        (f"W/{ETAG}", 200),
        ("Mon, 06 May 2024 07:08:09 GMT", 200),  # even the exact Last-Modified: a date is weak
        ("nonsense", 200),
    ],
)
def test_plan_if_range(if_range: str | None, status: int) -> None:
    plan = plan_response(REP, get(range="bytes=10-", if_range=if_range))
    assert plan.status == status
    assert window(plan) == ((10, TOTAL) if status == 206 else (0, TOTAL))
    # If-Range guards only the Range: an unsatisfiable range with a stale tag is a 200 too.
    stale = plan_response(REP, get(range=f"bytes={TOTAL}-", if_range=if_range))
    assert stale.status == (416 if status == 206 else 200)


@pytest.mark.parametrize("value", ["bytes=5-2", "bytes=x", "pages=1-2", "bytes=0-1,5-2"])
def test_plan_ignored_range_is_whole(value: str) -> None:
    plan = plan_response(REP, get(range=value))
    assert plan.status == 200 and window(plan) == (0, TOTAL)


def test_plan_other_methods_ignore_range() -> None:
    plan = plan_response(REP, Request("POST", range="bytes=0-9"))
    assert plan.status == 200 and window(plan) == (0, TOTAL)


# ----------------------------------------------------------------------------- preconditions

OTHER = '"another-recording"'
BEFORE = "Mon, 06 May 2024 07:08:08 GMT"  # a second before Last-Modified
AT = "Mon, 06 May 2024 07:08:09 GMT"  # Last-Modified (the recording time, whole seconds)
AFTER = "Mon, 06 May 2024 07:08:10 GMT"


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, 200),
        # If-Match: strong comparison, * matches, garbage matches nothing
        ({"if_match": ETAG}, 200),
        ({"if_match": f"{OTHER}, {ETAG}"}, 200),
        ({"if_match": "*"}, 200),
        ({"if_match": OTHER}, 412),
        ({"if_match": f"W/{ETAG}"}, 412),
        ({"if_match": "garbage"}, 412),
        ({"if_match": ""}, 412),
        # If-Unmodified-Since: 412 when modified after the date; ignored if not a date
        ({"if_unmodified_since": AT}, 200),
        ({"if_unmodified_since": AFTER}, 200),
        ({"if_unmodified_since": BEFORE}, 412),
        ({"if_unmodified_since": "garbage"}, 200),
        # ...and ignored when If-Match is there
        ({"if_match": ETAG, "if_unmodified_since": BEFORE}, 200),
        ({"if_match": OTHER, "if_unmodified_since": AFTER}, 412),
        # If-None-Match: weak comparison, 304 for GET and HEAD
        ({"if_none_match": ETAG}, 304),
        ({"if_none_match": f"W/{ETAG}"}, 304),
        ({"if_none_match": f"{OTHER}, W/{ETAG}"}, 304),
        ({"if_none_match": "*"}, 304),
        ({"if_none_match": OTHER}, 200),
        ({"if_none_match": "garbage"}, 200),
        # If-Modified-Since: 304 unless modified after the date; ignored if not a date
        ({"if_modified_since": AT}, 304),
        ({"if_modified_since": AFTER}, 304),
        ({"if_modified_since": BEFORE}, 200),
        ({"if_modified_since": "garbage"}, 200),
        ({"if_modified_since": f"{AT}, {AT}"}, 200),  # two values: not a date
        # ...and ignored when If-None-Match is there
        ({"if_none_match": ETAG, "if_modified_since": BEFORE}, 304),
        ({"if_none_match": OTHER, "if_modified_since": AFTER}, 200),
        # 412 before 304
        ({"if_match": OTHER, "if_none_match": ETAG}, 412),
        ({"if_unmodified_since": BEFORE, "if_modified_since": AFTER}, 412),
        # preconditions before Range: 304 and 412 even for an unsatisfiable range
        ({"if_none_match": ETAG, "range": f"bytes={TOTAL}-"}, 304),
        ({"if_match": OTHER, "range": f"bytes={TOTAL}-"}, 412),
        ({"if_match": ETAG, "range": "bytes=0-9"}, 206),
        ({"if_none_match": OTHER, "range": "bytes=0-9", "if_range": ETAG}, 206),
    ],
)
def test_preconditions_table(fields: dict[str, str], status: int) -> None:
    assert plan_response(REP, get(**fields)).status == status
    head = plan_response(REP, Request("HEAD", **fields)).status
    assert head == (200 if status in (206, 416) else status)


def test_304_and_412() -> None:
    not_modified = plan_response(REP, get(if_none_match=ETAG, range="bytes=0-9"))
    assert (not_modified.status, not_modified.parts, not_modified.tail) == (304, (), b"")
    assert headers(not_modified) == {"etag": ETAG, "cache-control": "no-cache"}
    failed = plan_response(REP, get(if_match=OTHER))
    assert failed.status == 412 and failed.parts == () and failed.tail == b"Precondition Failed\n"
    assert headers(failed)["cache-control"] == "no-store"
    # If-None-Match on another method: 412, not 304 (RFC 9110 13.1.2).
    assert plan_response(REP, Request("DELETE", if_none_match="*")).status == 412
    # If-Modified-Since applies to GET and HEAD only.
    assert plan_response(REP, Request("POST", if_modified_since=AFTER)).status == 200


def oracle(method: str, f: dict[str, str], lm: int, current: str) -> int:
    """RFC 9110 section 13.2.2, step by step, written apart from the implementation."""

    def tags(value: str) -> list[tuple[bool, str]] | None:
        items = [item.strip() for item in value.split(",") if item.strip()]
        out = []
        for item in items:
            m = re.fullmatch(r'(W/)?"([^"]*)"', item)
            if m is None:
                return None
            out.append((m.group(1) is not None, m.group(2)))
        return out

    cur = current.strip('"')
    # Step 1
    if "if_match" in f:
        value = f["if_match"].strip()
        listed = tags(value)
        ok = value == "*" or bool(listed and any(not w and o == cur for w, o in listed))
        if not ok:
            return 412
    # Step 2
    elif "if_unmodified_since" in f:
        date = parse_http_date(f["if_unmodified_since"])
        if date is not None and lm > date:
            return 412
    # Step 3
    if "if_none_match" in f:
        value = f["if_none_match"].strip()
        listed = tags(value)
        if value == "*" or (listed and any(o == cur for _, o in listed)):
            return 304 if method in ("GET", "HEAD") else 412
    # Step 4
    elif "if_modified_since" in f and method in ("GET", "HEAD"):
        date = parse_http_date(f["if_modified_since"])
        if date is not None and lm <= date:
            return 304
    # Step 5
    applies = "if_range" not in f or f["if_range"].strip() == current
    if method == "GET" and "range" in f and applies:
        return 206
    return 200


tag_values = st.sampled_from([ETAG, f"W/{ETAG}", OTHER, f"W/{OTHER}", "*", f"{OTHER}, {ETAG}",
                              f'W/{OTHER}, W/{ETAG}', "garbage", ""])  # fmt: skip
date_values = st.sampled_from([BEFORE, AT, AFTER, "Sunday, 06-May-24 07:08:10 GMT",
                               "Mon May  6 07:08:08 2024", "garbage", ""])  # fmt: skip


@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "if_match": tag_values,
            "if_none_match": tag_values,
            "if_modified_since": date_values,
            "if_unmodified_since": date_values,
            "range": st.just("bytes=0-9"),
            "if_range": st.sampled_from([ETAG, OTHER, AT]),
        },
    ),
)
def test_preconditions_against_oracle(method: str, fields: dict[str, str]) -> None:
    plan = plan_response(REP, Request(method, **fields))
    assert plan.status == oracle(method, fields, LM, ETAG)


@given(
    total=st.integers(1024, 2**45),
    value=st.one_of(
        st.none(),
        st.builds("bytes={}-{}".format, st.integers(0, 2**46), st.integers(0, 2**46)),
        st.builds("bytes={}-".format, st.integers(0, 2**46)),
        st.builds("bytes=-{}".format, st.integers(0, 2**46)),
        st.builds("bytes={}-{},{}-{}".format, *[st.integers(0, 2**46)] * 4),
        st.text(max_size=20),
    ),
    method=st.sampled_from(["GET", "HEAD", "get"]),
    inm=st.one_of(st.none(), tag_values),
)
def test_plan_invariants(total: int, value: str | None, method: str, inm: str | None) -> None:
    rep = make_rep(total=total)
    plan = plan_response(rep, Request(method, range=value, if_none_match=inm))
    found = headers(plan)
    assert plan.status in (200, 206, 304, 416)
    assert found["etag"] == rep.etag and found["cache-control"] == rep.cache_control
    if plan.status in (304, 416):
        assert not plan.parts and not plan.tail
        if plan.status == 416:
            assert found["content-range"] == f"bytes */{total}"
        return
    assert found["accept-ranges"] == "bytes"
    length = int(found["content-length"])
    if plan.status == 200:
        assert length == total and "content-range" not in found
    elif "content-range" in found:
        first, last, whole = map(int, re.findall(r"\d+", found["content-range"]))
        assert (first, last + 1, whole) == (*window(plan), total)
        assert length == last + 1 - first > 0
    else:
        assert found["content-type"].startswith("multipart/byteranges; boundary=")
        assert 1 < len(plan.parts) <= MAX_PARTS and plan.multipart
        assert sum(p.end - p.start for p in plan.parts) <= _http.MAX_MULTIPART_BYTES
    if method.upper() == "HEAD":
        assert not plan.parts and plan.status == 200
    else:
        assert plan.body_length == length


def test_method_allowed_and_plain_response() -> None:
    assert _http.method_allowed("GET") and _http.method_allowed("head")
    assert not _http.method_allowed("POST") and not _http.method_allowed("OPTIONS")
    plan = _http.plain_response(405, "Method Not Allowed", allow=_http.ALLOW_HEADER)
    assert plan.status == 405 and plan.tail == b"Method Not Allowed\n" and not plan.parts
    assert headers(plan) == {
        "content-type": "text/plain; charset=utf-8",
        "content-length": str(len(plan.tail)),
        "allow": "GET, HEAD",
    }
    assert plan.body_length == len(plan.tail)


# ----------------------------------------------------------------------------- views, one-shot


def test_a_view_is_described_by_its_own_media_type() -> None:
    """A compressed or sealed view: its media type on the whole, a part, and every part of a
    multipart body; its name in Content-Disposition."""
    rep = _http.Representation.describe(
        total_size=TOTAL,
        identity=IDENTITY,
        recorded_at=RECORDED,
        filename="dataset.tar.zst.age",
        content_type="application/octet-stream",
    )
    whole = plan_response(rep)
    assert headers(whole)["content-type"] == "application/octet-stream"
    assert headers(whole)["content-disposition"] == 'attachment; filename="dataset.tar.zst.age"'
    part = plan_response(rep, get(range="bytes=5-9"))
    assert part.status == 206 and headers(part)["content-type"] == "application/octet-stream"
    tape = bytes(i % 251 for i in range(TOTAL))
    several = plan_response(rep, get(range="bytes=0-1,10-11"), boundary="b")
    assert [kind for kind, _, _ in parse_multipart(several, tape)] == [
        "application/octet-stream"
    ] * 2
    for bad in ("", "text/plain\r\nx: y", "caf\u00e9/x"):
        with pytest.raises(ValueError, match="media type"):
            _http.Representation.describe(
                total_size=1,
                identity=IDENTITY,
                recorded_at=RECORDED,
                filename="x",
                content_type=bad,
            )


def no_ranges(total: int = TOTAL) -> _http.Representation:
    return _http.Representation.describe(
        total_size=total, identity=IDENTITY, recorded_at=RECORDED, filename="t.tar", ranges=False
    )


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"range": "bytes=0-9"},
        {"range": "bytes=0-1,5-6"},
        {"range": f"bytes={TOTAL}-"},  # would be 416
        {"range": "bytes=-10", "if_range": ETAG},
        {"range": "bytes=-10", "if_range": '"other"'},
    ],
)
def test_without_ranges_the_whole_body_and_accept_ranges_none(fields: dict[str, str]) -> None:
    """Bytes that play whole, once (a one-shot tape with streams): Range is ignored."""
    plan = plan_response(no_ranges(), get(**fields))
    assert plan.status == 200 and window(plan) == (0, TOTAL) and not plan.multipart
    found = headers(plan)
    assert found["accept-ranges"] == "none" and "content-range" not in found
    assert found["content-length"] == str(TOTAL)


def test_without_ranges_the_validators_still_hold() -> None:
    rep = no_ranges()
    cached = plan_response(rep, get(if_none_match=ETAG, range="bytes=0-9"))
    assert cached.status == 304 and not cached.parts
    assert plan_response(rep, get(if_match='"x"')).status == 412
    head = plan_response(rep, Request("HEAD", range="bytes=0-9"))
    assert head.status == 200 and not head.parts and head.header("accept-ranges") == "none"


@given(
    total=st.integers(1, 2**40),
    value=st.one_of(st.none(), st.text(max_size=20), st.builds("bytes={}-".format, st.integers())),
    if_range=st.one_of(st.none(), st.just(ETAG), st.text(max_size=10)),
)
def test_without_ranges_never_a_part(total: int, value: str | None, if_range: str | None) -> None:
    plan = plan_response(no_ranges(total), get(range=value, if_range=if_range))
    assert plan.status == 200 and window(plan) == (0, total)
    assert plan.header("accept-ranges") == "none"
