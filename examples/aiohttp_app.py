"""Serve a folder as a tape from an aiohttp handler.

    python examples/aiohttp_app.py FOLDER [--host 127.0.0.1] [--port 8000]
    python examples/aiohttp_app.py --self-test

FOLDER is recorded first if it holds no tape yet, and served at ``/download`` by
:func:`atartape.aiohttp.tape_response`; the tape is opened once, when the application starts.
A cut download resumes from the exact byte:

    curl -C - -o dataset.tar http://127.0.0.1:8000/download

``--self-test`` serves a temporary folder on a free port, fetches it whole and by range, checks
the archive and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import tarfile
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

import atartape
from atartape.aiohttp import tape_response

TAPE = web.AppKey("tape", atartape.Tape)
FOLDER = web.AppKey("folder", str)


async def download(request: web.Request) -> web.StreamResponse:
    app = request.app
    return await tape_response(app[TAPE], request, source_root=app[FOLDER])


def create_app(folder: str) -> web.Application:
    """The aiohttp application serving the tape recorded in ``folder`` at ``/download``."""

    async def open_tape(app: web.Application) -> AsyncIterator[None]:
        app[TAPE] = await atartape.Tape.discover(folder)
        yield

    app = web.Application()
    app[FOLDER] = folder
    app.cleanup_ctx.append(open_tape)
    app.router.add_get("/download", download)  # GET and HEAD
    return app


async def ensure_recorded(folder: str) -> atartape.Tape:
    """The tape recorded in ``folder``; records one first if there is none."""
    try:
        return await atartape.Tape.discover(folder)
    except atartape.TapeNotFoundError:
        return await atartape.record(folder)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as reply:
        return reply.status, reply.read()


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
            status, whole = await asyncio.to_thread(fetch, url)
            expect(status == 200 and len(whole) == tape.total_size, f"whole: {status}")
            with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
                expect("sample/sub/big.bin" in archive.getnames(), "archive members")
            status, part = await asyncio.to_thread(fetch, url, {"Range": "bytes=512-1535"})
            expect(status == 206 and part == whole[512:1536], f"range: {status}")
            print(f"ok {url}: {len(whole)} bytes, bytes 512-1535 by range")
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
