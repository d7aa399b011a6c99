"""Serve a folder as a tape on trio, under hypercorn: the plain ASGI app, no framework.

    python examples/trio_hypercorn.py FOLDER [--host 127.0.0.1] [--port 8000]
    python examples/trio_hypercorn.py --self-test

FOLDER is recorded first if it holds no tape yet, and served by :class:`atartape.asgi.TapeApp`,
on trio: ``/`` redirects to ``/r/<identity>/<name>.tar``, the URL of the recording of the moment,
where a cut download resumes (``curl -f -C -``, ``wget -c``) or, once FOLDER is re-recorded,
fails with 410 Gone instead of splicing two recordings. The module also exposes ``app`` for
hypercorn's own command line (the tape must be recorded):

    ATARTAPE_SOURCE=FOLDER hypercorn --worker-class trio examples/trio_hypercorn.py:app

``TapeApp`` does no I/O when it is built, so building it at import time is fine; it opens the
tape on the first request. ``--self-test`` serves a temporary folder on a free port, fetches it
whole and by range, checks the archive and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import atartape
from atartape.asgi import TapeApp

app = TapeApp(os.environ.get("ATARTAPE_SOURCE", "."))


async def ensure_recorded(folder: str) -> atartape.Tape:
    """The tape recorded in ``folder``; records one first if there is none."""
    try:
        return await atartape.Tape.discover(folder)
    except atartape.TapeNotFoundError:
        return await atartape.record(folder)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    """Status, body and final URL (redirects followed)."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as reply:
        return reply.status, reply.read(), reply.url


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
        config = Config()
        config.bind = ["127.0.0.1:0"]  # a free port; serve() reports the one it bound
        config.loglevel = "WARNING"
        async with trio.open_nursery() as nursery:
            shutdown = trio.Event()
            binds = await nursery.start(
                functools.partial(serve, TapeApp(folder), config, shutdown_trigger=shutdown.wait)
            )
            url = binds[0] + "/"
            status, whole, final = await trio.to_thread.run_sync(fetch, url)
            expect(status == 200 and len(whole) == tape.total_size, f"whole: {status}")
            expect(final.endswith(f"/r/{tape.identity}/sample.tar"), f"redirected to {final}")
            with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
                expect("sample/sub/big.bin" in archive.getnames(), "archive members")
            status, part, _ = await trio.to_thread.run_sync(fetch, final, {"Range": "bytes=-5000"})
            expect(status == 206 and part == whole[-5000:], f"range: {status}")
            print(f"ok {url}: {len(whole)} bytes on trio, last 5000 bytes of {final} by range")
            shutdown.set()


async def serve_folder(folder: str, host: str, port: int) -> None:
    await ensure_recorded(folder)
    config = Config()
    config.bind = [f"{host}:{port}"]
    await serve(TapeApp(folder), config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="the folder to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true", help="serve, fetch, verify, exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.self_test:
        trio.run(self_test)
    elif args.folder:
        trio.run(serve_folder, args.folder, args.host, args.port)
    else:
        parser.error("give a FOLDER to serve (or --self-test)")


if __name__ == "__main__":
    main()
