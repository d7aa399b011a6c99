"""Serve a folder as a tape from Starlette under uvicorn.

    python examples/starlette_app.py FOLDER [--host 127.0.0.1] [--port 8000]
    python examples/starlette_app.py --self-test

FOLDER is recorded first if it holds no tape yet, then served twice: ``/tape/`` is a plain
:class:`atartape.asgi.TapeApp` mounted under ``/tape`` (the way FastAPI's ``app.mount`` works
too), ``/download`` a route returning :class:`atartape.starlette.TapeResponse`. A cut download
resumes from the exact byte:

    curl -C - -o dataset.tar http://127.0.0.1:8000/download

``--self-test`` serves a temporary folder on a free port, fetches it whole and by range, checks
the archive and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import socket
import tarfile
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

import atartape
from atartape.asgi import TapeApp
from atartape.starlette import TapeResponse


def create_app(folder: str) -> Starlette:
    """The Starlette application serving the tape recorded in ``folder``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.tape = await atartape.Tape.discover(folder)
        yield

    async def download(request: Request) -> TapeResponse:
        return TapeResponse(request.app.state.tape, request, source_root=folder)

    return Starlette(
        routes=[
            Route("/download", download),  # GET (and HEAD, which Starlette adds)
            Mount("/tape", app=TapeApp(folder)),
        ],
        lifespan=lifespan,
    )


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
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = create_app(str(folder))
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            with anyio.fail_after(30):
                while not server.started:
                    await anyio.sleep(0.01)
            for path in ("/tape/", "/download"):
                url = f"http://127.0.0.1:{port}{path}"
                status, whole = await anyio.to_thread.run_sync(fetch, url)
                expect(status == 200 and len(whole) == tape.total_size, f"whole: {status}")
                with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
                    expect("sample/sub/big.bin" in archive.getnames(), "archive members")
                status, part = await anyio.to_thread.run_sync(fetch, url, {"Range": "bytes=1000-"})
                expect(status == 206 and part == whole[1000:], f"range: {status}")
                print(f"ok {url}: {len(whole)} bytes, resumed at byte 1000")
            server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="the folder to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true", help="serve, fetch, verify, exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.self_test:
        anyio.run(self_test)
        return
    if not args.folder:
        parser.error("give a FOLDER to serve (or --self-test)")
    anyio.run(ensure_recorded, args.folder)
    uvicorn.run(create_app(args.folder), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
