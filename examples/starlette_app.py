"""Serve a folder as a tape from Starlette under uvicorn.

    python examples/starlette_app.py FOLDER [--host 127.0.0.1] [--port 8000]
    python examples/starlette_app.py --self-test

FOLDER is recorded first if it holds no tape yet, then served twice: ``/tape/`` is a plain
:class:`atartape.asgi.TapeApp` mounted under ``/tape`` (the way FastAPI's ``app.mount`` works
too), ``/download`` a route returning :class:`atartape.starlette.TapeResponse`. Both serve the
view the tape was recorded with (``atartape record --zstd --age-recipient age1...`` makes
``.tar.zst.age``). ``/selection?name=a.txt&name=sub/b.bin`` archives the files named as a
one-shot :class:`atartape.TarTape`, with Range and If-Range too.

``/tape/`` redirects to the URL of the recording of the moment, ``/tape/r/<identity>/<name>.tar``,
which answers 410 Gone once FOLDER is re-recorded: a download cut there resumes from the exact
byte, or fails loudly if the tape changed meanwhile (it never splices two recordings):

    curl -fL -o dataset.tar http://127.0.0.1:8000/tape/         # prints nothing; then, if cut:
    curl -f -C - -o dataset.tar http://127.0.0.1:8000/tape/r/<identity>/dataset.tar

``/download`` asks the same TapeApp for the tape of the moment, so it always serves the current
recording under that recording's ETag; a resume there is safe only with ``If-Range`` (browsers
send it).

``--self-test`` serves a temporary folder on a free port, fetches it whole and by range,
re-records it and checks that the old recording's URL is gone, and exits 0.
"""

from __future__ import annotations

import argparse
import io
import logging
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

import atartape
from atartape.asgi import TapeApp
from atartape.starlette import TapeResponse


def create_app(folder: str) -> Starlette:
    """The Starlette application serving the tape recorded in ``folder``."""
    tapes = TapeApp(folder)

    async def download(request: Request) -> TapeResponse:
        # The tape of the moment: TapeApp opens it again whenever FOLDER is re-recorded. A Tape
        # held since start-up would go stale (TapeResponse then answers 503 rather than send the
        # new recording under the old ETag).
        return TapeResponse(await tapes.tape(), request, source_root=folder)

    async def selection(request: Request) -> Response:
        # A one-shot tape of the files named (?name=a.txt&name=sub/b.bin): no index, its size
        # and ETag known once prepared, so it resumes by Range and If-Range like a recording.
        names = request.query_params.getlist("name")
        if not names or any(part in ("", ".", "..") for n in names for part in n.split("/")):
            return PlainTextResponse("name files inside the folder: ?name=a.txt", 400)
        tape = atartape.TarTape(name="selection")
        for name in names:
            tape.add_file(Path(folder, name), arcname=f"selection/{name}")
        try:
            await tape.prepare()  # stats the files, in a worker thread
        except atartape.SourceNotFoundError as error:
            return PlainTextResponse(str(error), 404)
        except (atartape.DuplicateEntryError, atartape.PathConstraintError) as error:
            return PlainTextResponse(str(error), 400)
        return TapeResponse(tape, request)

    return Starlette(
        routes=[
            Route("/download", download),  # GET (and HEAD, which Starlette adds)
            Route("/selection", selection),
            Mount("/tape", app=tapes),
        ]
    )


async def ensure_recorded(folder: str) -> atartape.Tape:
    """The tape recorded in ``folder``; records one first if there is none."""
    try:
        return await atartape.Tape.discover(folder)
    except atartape.TapeNotFoundError:
        return await atartape.record(folder)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, str, str]:
    """Status, body, ETag and final URL (redirects followed); an HTTP error's status too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as reply:
            return reply.status, reply.read(), reply.headers["etag"], reply.url
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(), "", url


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
            final = {}
            for path in ("/tape/", "/download"):
                url = f"http://127.0.0.1:{port}{path}"
                status, whole, etag, final[path] = await anyio.to_thread.run_sync(fetch, url)
                expect(status == 200 and len(whole) == tape.total_size, f"whole: {status}")
                expect(etag == f'"{tape.identity}"', f"ETag {etag}")
                with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
                    expect("sample/sub/big.bin" in archive.getnames(), "archive members")
                asked = {"Range": "bytes=1000-", "If-Range": etag}
                status, part, _, _ = await anyio.to_thread.run_sync(fetch, final[path], asked)
                expect(status == 206 and part == whole[1000:], f"range: {status}")
                print(f"ok {url}: {len(whole)} bytes, resumed at byte 1000")
            expect(f"/tape/r/{tape.identity}/sample.tar" in final["/tape/"], "recording URL")
            url = f"http://127.0.0.1:{port}/selection?name=hello.txt&name=sub/big.bin"
            status, whole, etag, _ = await anyio.to_thread.run_sync(fetch, url)
            expect(status == 200 and len(whole) == 3 * 512 + 2 * 1024 * 1024 + 1024, "selection")
            asked = {"Range": "bytes=5000-", "If-Range": etag}
            status, part, _, _ = await anyio.to_thread.run_sync(fetch, url, asked)
            expect(status == 206 and part == whole[5000:], f"selection range: {status}")
            print(f"ok {url}: {len(whole)} bytes, a one-shot tape resumed at byte 5000")
            (folder / "hello.txt").write_text("hello again\n")
            again = await atartape.record(folder, overwrite=True)
            status, _, _, _ = await anyio.to_thread.run_sync(fetch, final["/tape/"])
            expect(status == 410, f"the old recording's URL answered {status}")
            for path in ("/tape/", "/download"):
                url = f"http://127.0.0.1:{port}{path}"
                status, whole, etag, _ = await anyio.to_thread.run_sync(fetch, url)
                expect(status == 200 and etag == f'"{again.identity}"', f"re-recorded: {etag}")
            print(f"ok re-recorded: {final['/tape/']} is gone, both URLs serve the new recording")
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
