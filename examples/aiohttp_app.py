"""Serve a folder as a tape from an aiohttp handler.

    python examples/aiohttp_app.py FOLDER [--host 127.0.0.1] [--port 8000]
    python examples/aiohttp_app.py --self-test

FOLDER is recorded first if it holds no tape yet, and served at ``/download`` by
:func:`atartape.aiohttp.tape_response`. The handler asks :meth:`atartape.asgi.TapeApp.tape` for
the tape of the moment (opened again whenever FOLDER is re-recorded), so the route always serves
the current recording under that recording's identity as ETag (a Tape held since start-up would
go stale: ``tape_response`` then answers 503 rather than send the new recording under the old
ETag). A cut download resumes from the exact byte;
with ``If-Range`` (browsers send it) a resume across a re-recording restarts cleanly:

    curl -C - -o dataset.tar http://127.0.0.1:8000/download

``--self-test`` serves a temporary folder on a free port, fetches it whole and by range, checks
the archive, re-records it and checks the new ETag, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from aiohttp import web

import atartape
from atartape.aiohttp import tape_response
from atartape.asgi import TapeApp

TAPES = web.AppKey("tapes", TapeApp)


async def download(request: web.Request) -> web.StreamResponse:
    tape = await request.app[TAPES].tape()  # the recording of the moment
    return await tape_response(tape, request)


def create_app(folder: str) -> web.Application:
    """The aiohttp application serving the tape recorded in ``folder`` at ``/download``."""
    app = web.Application()
    # TapeApp keeps the tape open and opens it again whenever the folder is re-recorded.
    app[TAPES] = TapeApp(folder)
    app.router.add_get("/download", download)  # GET and HEAD
    return app


async def ensure_recorded(folder: str) -> atartape.Tape:
    """The tape recorded in ``folder``; records one first if there is none."""
    try:
        return await atartape.Tape.discover(folder)
    except atartape.TapeNotFoundError:
        return await atartape.record(folder)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as reply:
        return reply.status, reply.read(), reply.headers["etag"]


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"self-test failed: {what}")


async def self_test() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "sample")
        (folder / "sub").mkdir(parents=True)
        (folder / "hello.txt").write_text("hello\n")
        (folder / "sub" / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
        tape = await atartape.record(folder)
        runner = web.AppRunner(create_app(str(folder)))
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)  # a free port
            await site.start()
            port = runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}/download"
            status, whole, etag = await asyncio.to_thread(fetch, url)
            expect(status == 200 and len(whole) == tape.total_size, f"whole: {status}")
            expect(etag == f'"{tape.identity}"', f"ETag {etag}")
            with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
                expect("sample/sub/big.bin" in archive.getnames(), "archive members")
            asked = {"Range": "bytes=512-1535", "If-Range": etag}
            status, part, _ = await asyncio.to_thread(fetch, url, asked)
            expect(status == 206 and part == whole[512:1536], f"range: {status}")
            print(f"ok {url}: {len(whole)} bytes, bytes 512-1535 by range")
            (folder / "hello.txt").write_text("hello again\n")
            again = await atartape.record(folder, overwrite=True)
            status, fresh, new_etag = await asyncio.to_thread(fetch, url, asked)  # stale If-Range
            expect(status == 200 and new_etag == f'"{again.identity}"', f"re-recorded: {status}")
            expect(len(fresh) == again.total_size, "the whole new recording")
            print(f"ok re-recorded: {url} serves the new recording whole to a stale If-Range")
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="the folder to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true", help="serve, fetch, verify, exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.self_test:
        asyncio.run(self_test())
        return
    if not args.folder:
        parser.error("give a FOLDER to serve (or --self-test)")
    asyncio.run(ensure_recorded(args.folder))
    web.run_app(create_app(args.folder), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
