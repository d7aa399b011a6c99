"""The HTTP semantics of serving a tape (atartape.format.http): pure, checked exhaustively."""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atartape.format import http as _http
from atartape.format.http import UNSATISFIABLE, ByteRange, parse_range, plan_response

TOTAL = 10_240
FINGERPRINT = "ab" * 32
RECORDED = datetime(2024, 5, 6, 7, 8, 9, 999_000, tzinfo=timezone.utc)


def make_rep(
    name: str = "dataset", total: int = TOTAL, filename: str | None = None
) -> _http.Representation:
    return _http.Representation.describe(
        total_size=total,
        identity=FINGERPRINT,
        recorded_at=RECORDED,
        filename=filename or f"{name}.tar",
    )


REP = make_rep()


# ----------------------------------------------------------------------------- Range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-0", ByteRange(0, 1)),
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=100-", ByteRange(100, TOTAL)),
        ("bytes=-100", ByteRange(TOTAL - 100, TOTAL)),
        ("bytes=-99999999", ByteRange(0, TOTAL)),  # longer than the tape: all of it
        ("bytes=10239-", ByteRange(10239, TOTAL)),
        ("bytes=10239-10239", ByteRange(10239, TOTAL)),
        ("bytes=5000-999999", ByteRange(5000, TOTAL)),  # last-pos past the end is clipped
        ("bytes=0-" + "9" * 5000, ByteRange(0, TOTAL)),  # a huge number is never converted
        ("BYTES=1-2", ByteRange(1, 3)),  # the unit is case-insensitive
        ("  bytes=1-2  ", ByteRange(1, 3)),
        ("bytes= 1-2 ", ByteRange(1, 3)),  # optional whitespace around list elements
        ("bytes=1-2,", ByteRange(1, 3)),  # empty list elements are accepted
        ("bytes=, ,1-2", ByteRange(1, 3)),
        ("bytes=007-008", ByteRange(7, 9)),
        # unsatisfiable: 416
        ("bytes=10240-", UNSATISFIABLE),
        ("bytes=10240-20000", UNSATISFIABLE),
        ("bytes=" + "9" * 5000 + "-", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=-000", UNSATISFIABLE),
        # ignored (malformed, another unit, several ranges): the whole tape, 200
        (None, None),
        ("", None),
        ("bytes", None),
        ("bytes=", None),
        ("bytes=-", None),
        ("bytes=5", None),
        ("bytes=a-b", None),
        ("bytes=1-a", None),
        ("bytes=--5", None),
        ("bytes=+1-2", None),
        ("bytes=1 -2", None),
        ("bytes=1-2-3", None),
        ("bytes=5-4", None),  # last-pos before first-pos: invalid, ignored
        ("bytes=" + "9" * 31 + "-" + "9" * 30, None),  # invalid even when both are huge
        ("bytes=0-1,5-6", None),  # several ranges: the whole tape
        ("bytes=0-1,10240-", None),
        ("bytes=0-1, -5", None),
        ("items=0-5", None),
        ("bytes 0-5", None),
        ("bytes=١-٢", None),  # Arabic-Indic digits are not DIGIT  # noqa: RUF001
        ("bytes=½-", None),
    ],
)
def test_parse_range_table(value: str | None, expected: object) -> None:
    assert parse_range(value, TOTAL) == expected


def test_parse_range_empty_representation_ignores_range() -> None:
    assert parse_range("bytes=0-5", 0) is None
    assert parse_range("bytes=-5", 0) is None


@given(
    total=st.integers(1, 2**50),
    first=st.integers(0, 2**52),
    length=st.integers(0, 2**52),
    zeros=st.integers(0, 3),
)
def test_int_range_against_oracle(total: int, first: int, length: int, zeros: int) -> None:
    last = first + length
    pad = "0" * zeros
    got = parse_range(f"bytes={pad}{first}-{pad}{last}", total)
    if first >= total:
        assert got is UNSATISFIABLE
    else:
        assert got == ByteRange(first, min(last, total - 1) + 1)
    open_ended = parse_range(f"bytes={first}-", total)
    assert open_ended == (UNSATISFIABLE if first >= total else ByteRange(first, total))
    if length > 0:  # last-pos before first-pos: ignored, never an error
        assert parse_range(f"bytes={last}-{first}", total) is None


@given(total=st.integers(1, 2**50), suffix=st.integers(0, 2**52))
def test_suffix_range_against_oracle(total: int, suffix: int) -> None:
    got = parse_range(f"bytes=-{suffix}", total)
    if suffix == 0:
        assert got is UNSATISFIABLE
    else:
        assert got == ByteRange(total - min(suffix, total), total)


@given(value=st.text(max_size=40), total=st.integers(0, 10**6))
def test_parse_range_never_raises_and_stays_inside(value: str, total: int) -> None:
    got = parse_range(value, total)
    if isinstance(got, ByteRange):
        assert 0 <= got.start < got.end <= total
        assert got.length == got.end - got.start


@given(
    value=st.from_regex(
        r"bytes=[0-9]{0,4}-[0-9]{0,4}(, ?[0-9]{0,4}-[0-9]{0,4}){0,2}", fullmatch=True
    )
)
def test_parse_range_grammar_fuzz(value: str) -> None:
    got = parse_range(value, 5000)
    specs = [s.strip() for s in value[len("bytes=") :].split(",") if s.strip()]
    if len(specs) != 1 or specs[0] == "-":
        assert got is None
    elif got is not None and got is not UNSATISFIABLE:
        assert 0 <= got.start < got.end <= 5000


# ----------------------------------------------------------------------------- validators


def test_etag_is_strong_and_quoted() -> None:
    assert _http.etag(FINGERPRINT) == f'"{FINGERPRINT}"'
    assert REP.etag == f'"{FINGERPRINT}"'


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        (None, True),
        (f'"{FINGERPRINT}"', True),
        (f' "{FINGERPRINT}" ', True),
        (f'W/"{FINGERPRINT}"', False),  # weak tags never match (strong comparison)
        ('"someone-else"', False),
        (FINGERPRINT, False),  # unquoted: not an entity tag
        ("Mon, 06 May 2024 07:08:09 GMT", False),  # a date: send it whole
        ("", False),
        ("garbage", False),
    ],
)
def test_if_range(value: str | None, matches: bool) -> None:
    assert _http.if_range_matches(value, REP.etag) is matches


def test_http_date() -> None:
    assert _http.http_date(RECORDED) == "Mon, 06 May 2024 07:08:09 GMT"
    assert REP.last_modified == "Mon, 06 May 2024 07:08:09 GMT"
    paris = RECORDED.astimezone(timezone(timedelta(hours=2)))
    assert _http.http_date(paris) == "Mon, 06 May 2024 07:08:09 GMT"
    assert _http.http_date(RECORDED.replace(tzinfo=None)) == "Mon, 06 May 2024 07:08:09 GMT"


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_http_date_round_trip(moment: datetime) -> None:
    text = _http.http_date(moment)
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", text)
    parsed = email.utils.parsedate_to_datetime(text)
    assert parsed == moment.replace(microsecond=0, tzinfo=timezone.utc)


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
    named = make_rep(filename="export.tar")
    assert named.disposition == 'attachment; filename="export.tar"'
    accented = make_rep("é")
    assert "filename*=UTF-8''%C3%A9.tar" in accented.disposition


# ----------------------------------------------------------------------------- plan_response


def headers(plan: _http.Plan) -> dict[str, str]:
    names = [name for name, _ in plan.headers]
    assert len(names) == len(set(names)), "a header is repeated"
    assert all(name == name.lower() for name in names)
    return dict(plan.headers)


def test_plan_whole() -> None:
    plan = plan_response(REP)
    assert (plan.status, plan.start, plan.end, plan.send_body) == (200, 0, TOTAL, True)
    assert headers(plan) == {
        "content-length": str(TOTAL),
        "content-type": "application/x-tar",
        "accept-ranges": "bytes",
        "etag": REP.etag,
        "last-modified": REP.last_modified,
        "content-disposition": 'attachment; filename="dataset.tar"',
    }
    assert plan.header("Content-Length") == str(TOTAL)
    assert plan.header("content-range") is None


def test_plan_head_has_the_headers_of_get_and_no_body() -> None:
    head = plan_response(REP, method="HEAD")
    assert (head.status, head.send_body, head.start, head.end) == (200, False, 0, 0)
    assert head.headers == plan_response(REP).headers
    # Range is defined for GET only: HEAD ignores it (RFC 9110 14.2).
    assert plan_response(REP, method="head", range_header="bytes=0-9").headers == head.headers


def test_plan_partial() -> None:
    plan = plan_response(REP, range_header="bytes=100-199")
    assert (plan.status, plan.start, plan.end, plan.send_body) == (206, 100, 200, True)
    found = headers(plan)
    assert found["content-range"] == f"bytes 100-199/{TOTAL}"
    assert found["content-length"] == "100"
    assert found["etag"] == REP.etag and found["content-type"] == "application/x-tar"
    assert "content-disposition" in found and found["accept-ranges"] == "bytes"
    suffix = plan_response(REP, range_header="bytes=-10")
    assert (suffix.start, suffix.end) == (TOTAL - 10, TOTAL)
    assert suffix.header("content-range") == f"bytes {TOTAL - 10}-{TOTAL - 1}/{TOTAL}"


def test_plan_unsatisfiable() -> None:
    plan = plan_response(REP, range_header=f"bytes={TOTAL}-")
    assert (plan.status, plan.send_body) == (416, False)
    assert headers(plan) == {
        "content-range": f"bytes */{TOTAL}",
        "content-length": "0",
        "accept-ranges": "bytes",
        "etag": REP.etag,
        "last-modified": REP.last_modified,
    }


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (None, 206),
        (f'"{FINGERPRINT}"', 206),
        ('"an-older-tape"', 200),
        (f'W/"{FINGERPRINT}"', 200),
        ("Mon, 06 May 2024 07:08:09 GMT", 200),  # even the exact Last-Modified: a date is weak
        ("nonsense", 200),
    ],
)
def test_plan_if_range(if_range: str | None, status: int) -> None:
    plan = plan_response(REP, range_header="bytes=10-", if_range=if_range)
    assert plan.status == status
    assert (plan.start, plan.end) == ((10, TOTAL) if status == 206 else (0, TOTAL))
    # If-Range guards only the Range: an unsatisfiable range with a stale tag is a 200 too.
    stale = plan_response(REP, range_header=f"bytes={TOTAL}-", if_range=if_range)
    assert stale.status == (416 if status == 206 else 200)


@pytest.mark.parametrize("value", ["bytes=0-1,3-4", "bytes=5-2", "bytes=x", "pages=1-2"])
def test_plan_ignored_range_is_whole(value: str) -> None:
    plan = plan_response(REP, range_header=value)
    assert (plan.status, plan.start, plan.end) == (200, 0, TOTAL)


def test_plan_other_methods_ignore_range() -> None:
    plan = plan_response(REP, method="POST", range_header="bytes=0-9")
    assert (plan.status, plan.end, plan.send_body) == (200, TOTAL, True)


@given(
    total=st.integers(1024, 2**45),
    value=st.one_of(
        st.none(),
        st.builds("bytes={}-{}".format, st.integers(0, 2**46), st.integers(0, 2**46)),
        st.builds("bytes={}-".format, st.integers(0, 2**46)),
        st.builds("bytes=-{}".format, st.integers(0, 2**46)),
        st.text(max_size=20),
    ),
    method=st.sampled_from(["GET", "HEAD", "get"]),
)
def test_plan_invariants(total: int, value: str | None, method: str) -> None:
    rep = make_rep(total=total)
    plan = plan_response(rep, method=method, range_header=value)
    found = headers(plan)
    assert plan.status in (200, 206, 416)
    assert found["accept-ranges"] == "bytes" and found["etag"] == rep.etag
    if plan.status == 416:
        assert found["content-range"] == f"bytes */{total}" and not plan.send_body
        return
    length = int(found["content-length"])
    if plan.status == 200:
        assert length == total and "content-range" not in found
    else:
        first, last, whole = map(int, re.findall(r"\d+", found["content-range"]))
        assert (first, last + 1, whole) == (plan.start, plan.end, total)
        assert length == plan.end - plan.start > 0
    if method.upper() == "HEAD":
        assert not plan.send_body and plan.status == 200
    else:
        assert plan.send_body and plan.end - plan.start == length


def test_method_allowed_and_plain_response() -> None:
    assert _http.method_allowed("GET") and _http.method_allowed("head")
    assert not _http.method_allowed("POST") and not _http.method_allowed("OPTIONS")
    plan, body = _http.plain_response(405, "Method Not Allowed", allow=_http.ALLOW_HEADER)
    assert plan.status == 405 and body == b"Method Not Allowed\n"
    assert headers(plan) == {
        "content-type": "text/plain; charset=utf-8",
        "content-length": str(len(body)),
        "allow": "GET, HEAD",
    }
