"""The conditional requests of TapeApp answered as nginx answers them (nginx as the reference).

nginx (Debian's package) serves a static file on 127.0.0.1 with a strong ETag and its
Last-Modified, ``if_modified_since before`` (RFC 9110's rule, not nginx's default exact match);
TapeApp serves a tape at its recording's URL. The same requests, each written against the
server's own validators (its ETag, another tag, its Last-Modified, a second before or after, a
malformed date...), must get the same status from both, except where nginx departs from RFC
9110 (listed in :func:`nginx_departs`), which TapeApp follows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

import atartape
from atartape.asgi import TapeApp
from tests.helpers import write
from tests.nginx import NGINX, running_nginx

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/x-tar tar; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
        if_modified_since before;
    }}
}}
"""


@dataclass
class Reference:
    url: str


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    tmp = tmp_path_factory.mktemp("nginx")
    root = tmp / "www"
    write(root / "ds.tar", bytes(range(256)) * 40)
    modified = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc).timestamp()
    os.utime(root / "ds.tar", (modified, modified))
    with running_nginx(CONFIG, root, tmp) as port:
        yield Reference(f"http://127.0.0.1:{port}/ds.tar")


def shifted(date: str, seconds: int) -> str:
    return format_datetime(parsedate_to_datetime(date) + timedelta(seconds=seconds), usegmt=True)


def concrete(symbolic: str | None, etag: str, last_modified: str) -> str | None:
    """A header value written against one server's validators."""
    if symbolic is None:
        return None
    return {
        "E": etag,
        "W/E": f"W/{etag}",
        "O": '"another-one"',
        "O,E": f'"another-one", {etag}',
        "O,W/E": f'"another-one", W/{etag}',
        "*": "*",
        "LM": last_modified,
        "LM-1": shifted(last_modified, -1),
        "LM+1": shifted(last_modified, 1),
        "LM-1d": shifted(last_modified, -86400),
        "bad": "yesterday",
    }[symbolic]


TAGS = [None, "E", "W/E", "O", "O,E", "O,W/E", "*"]
DATES = [None, "LM", "LM-1", "LM+1", "LM-1d", "bad"]
FIELDS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


def nginx_departs(case: dict[str, str | None], method: str) -> bool:
    """Where nginx 1.22 answers otherwise than TapeApp, which follows RFC 9110."""
    im, inm, ims, ius = (case.get(name) for name in FIELDS)
    return (
        # Section 13.2.2: nginx evaluates If-Unmodified-Since even when If-Match is present
        # (the RFC: ignore it)...
        (im is not None and ius is not None)
        # ...and answers 412 to one that is not a date (the RFC: ignore it).
        or ius == "bad"
        # It answers 304 only if both If-Modified-Since and If-None-Match say so (the RFC:
        # ignore If-Modified-Since when If-None-Match is present).
        or (inm is not None and ims is not None)
        # Section 14.2: Range is defined for GET only; nginx answers a HEAD with Range 206.
        or (method == "HEAD" and case.get("Range") is not None)
        # An invalid range (last before first): the RFC lets a server ignore it (200, ours)
        # or reject it (416, nginx).
        or case.get("Range") == "bytes=9-3"
    )


def cases() -> Iterator[dict[str, str | None]]:
    for values in itertools.product(TAGS, TAGS, DATES, DATES):
        yield dict(zip(FIELDS, values))


RANGE_CASES = [
    {"Range": r, "If-Range": i, "If-None-Match": n}
    for r, i, n in itertools.product(
        ["bytes=0-9", "bytes=-5", "bytes=0-1,5-6", "bytes=99999999-", "bytes=9-3"],
        [None, "E", "O", "W/E"],
        [None, "O", "E"],
    )
]


def request_headers(case: dict[str, str | None], etag: str, last_modified: str) -> dict[str, str]:
    headers = {}
    for name, symbolic in case.items():
        if name == "Range":
            if symbolic is not None:
                headers[name] = symbolic
            continue
        value = concrete(symbolic, etag, last_modified)
        if value is not None:
            headers[name] = value
    return headers


async def statuses(
    http: httpx.AsyncClient, url: str, method: str, all_cases: list[dict[str, str | None]]
) -> list[int]:
    head = await http.head(url)
    etag, last_modified = head.headers["etag"], head.headers["last-modified"]
    found = []
    for case in all_cases:
        response = await http.request(
            method, url, headers=request_headers(case, etag, last_modified)
        )
        found.append(response.status_code)
    return found


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_conditional_statuses_match_nginx(
    nginx: Reference, dataset: Path, method: str
) -> None:
    tape = await atartape.record(dataset)
    app = TapeApp(dataset)
    all_cases = [c for c in [*cases(), *RANGE_CASES] if not nginx_departs(c, method)]
    # A connection per request: nginx (master_process off) at times resets a kept-alive one.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=fresh) as reference:
        expected = await statuses(reference, nginx.url, method, all_cases)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tape") as ours:
        got = await statuses(ours, app.recording_path(tape), method, all_cases)
    differing = [
        (case, want, have) for case, want, have in zip(all_cases, expected, got) if want != have
    ]
    assert not differing, differing[:10]
    assert {304, 412, 200}.issubset(expected)  # the comparison means something
    if method == "GET":
        assert {206, 416}.issubset(expected)


def test_the_departures_are_what_they_say(nginx: Reference) -> None:
    """The cases left out above: nginx answers them otherwise than RFC 9110, as listed."""

    def status(**headers: str) -> int:
        return httpx.get(nginx.url, headers=headers, timeout=30).status_code

    head = httpx.head(nginx.url, timeout=30)
    etag, lm = head.headers["etag"], head.headers["last-modified"]
    assert status(**{"If-Match": etag, "If-Unmodified-Since": shifted(lm, -1)}) == 412  # RFC: 200
    assert status(**{"If-Unmodified-Since": "yesterday"}) == 412  # RFC: 200
    assert status(**{"If-None-Match": etag, "If-Modified-Since": shifted(lm, -1)}) == 200  # 304
    assert status(**{"Range": "bytes=0-9", "If-Range": lm}) == 206  # ours: 200 (a date is weak)
    assert status(Range="bytes=9-3") == 416  # ours: 200 (both allowed)
    assert httpx.head(nginx.url, headers={"Range": "bytes=0-9"}, timeout=30).status_code == 206
