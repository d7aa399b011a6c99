"""An HTTP server for the ``http`` group: one kind per process, on 127.0.0.1:PORT, until killed.

    python http_server.py KIND PORT SOURCE INDEX TAR

- ``asgi-tape``: ``atartape.asgi.TapeApp`` under uvicorn (its default loop and HTTP parser);
- ``asgi-bare``: a bare ASGI app under uvicorn sending the tape's bytes (read from TAR into
  memory first) in 64 KiB pieces;
- ``asgi-file``: Starlette's ``FileResponse`` of TAR under uvicorn;
- ``aiohttp-tape``: ``atartape.aiohttp.tape_response`` in an aiohttp handler;
- ``aiohttp-bare``: an aiohttp handler writing the bytes of TAR from memory in 64 KiB pieces.

TAR is the tape written once to a file (the bytes nginx serves); SOURCE and INDEX the recorded
folder and its index.
"""

from __future__ import annotations

import sys
from typing import Any

PIECE = 64 * 1024
KINDS = ("asgi-tape", "asgi-bare", "asgi-file", "aiohttp-tape", "aiohttp-bare")


def bare_asgi(data: bytes) -> Any:
    headers = [
        (b"content-length", str(len(data)).encode()),
        (b"content-type", b"application/x-tar"),
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for at in range(0, len(data), PIECE):
            body = data[at : at + PIECE]
            await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def file_asgi(path: str) -> Any:
    from starlette.responses import FileResponse

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await FileResponse(path, media_type="application/x-tar")(scope, receive, send)

    return app


def aiohttp_app(kind: str, source: str, index: str, tar_path: str) -> Any:
    from aiohttp import web

    import atartape
    from atartape.aiohttp import tape_response

    async def tape_handler(request: web.Request) -> web.StreamResponse:
        return await tape_response(request.app["tape"], request, source_root=source)

    async def open_tape(app: web.Application) -> None:
        app["tape"] = await atartape.Tape.open(index)

    data = b""
    if kind == "aiohttp-bare":
        with open(tar_path, "rb") as f:
            data = f.read()

    async def bare_handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.content_length = len(data)
        await response.prepare(request)
        for at in range(0, len(data), PIECE):
            await response.write(data[at : at + PIECE])
        await response.write_eof()
        return response

    app = web.Application()
    if kind == "aiohttp-tape":
        app.on_startup.append(open_tape)
        app.router.add_get("/", tape_handler)
    else:
        app.router.add_get("/", bare_handler)
    return app


def main() -> None:
    kind, port, source, index, tar_path = sys.argv[1:6]
    if kind not in KINDS:
        sys.exit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if kind.startswith("aiohttp"):
        from aiohttp import web

        app = aiohttp_app(kind, source, index, tar_path)
        web.run_app(app, host="127.0.0.1", port=int(port), print=None, access_log=None)
        return
    import uvicorn

    from atartape.asgi import TapeApp

    if kind == "asgi-tape":
        asgi: Any = TapeApp(source, index_path=index)
    elif kind == "asgi-bare":
        with open(tar_path, "rb") as f:
            asgi = bare_asgi(f.read())
    else:
        asgi = file_asgi(tar_path)
    uvicorn.run(
        asgi,
        host="127.0.0.1",
        port=int(port),
        log_level="warning",
        lifespan="off",
        access_log=False,
    )


if __name__ == "__main__":
    main()
