"""The one-shot tapes of oneshot_support.py served by real servers (the tests start them).

    ONESHOT_FOLDER=DIR uvicorn tests.serving.oneshot_app:app
    ONESHOT_FOLDER=DIR hypercorn --worker-class trio tests.serving.oneshot_app:app
    ONESHOT_FOLDER=DIR python -m aiohttp.web tests.serving.oneshot_app:aiohttp_app

``/selection?name=a.jpg&name=c.jpg`` builds a TarTape of those files, a note and a remote
object per request (ranges work, the ETag is stable); ``/streamed`` one with a streamed member
(whole, once); ``/remote-read`` says how many bytes of the remote object were read so far.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from atartape.aiohttp import tape_response
from atartape.starlette import TapeResponse
from tests.serving.oneshot_support import Remote, selection, streamed

FOLDER = Path(os.environ.get("ONESHOT_FOLDER", "."))
REMOTE = Remote()


async def pick(request: Request) -> Response:
    names = request.query_params.getlist("name")
    return TapeResponse(selection(FOLDER, names, REMOTE), request)


async def flowing(request: Request) -> Response:
    return TapeResponse(streamed(FOLDER), request)


async def remote_read(request: Request) -> Response:
    return PlainTextResponse(str(REMOTE.read))


app = Starlette(
    routes=[
        Route("/selection", pick),
        Route("/streamed", flowing),
        Route("/remote-read", remote_read),
    ]
)


async def aiohttp_pick(request: web.Request) -> web.StreamResponse:
    names = request.query.getall("name", [])
    return await tape_response(selection(FOLDER, names, REMOTE), request)


async def aiohttp_flowing(request: web.Request) -> web.StreamResponse:
    return await tape_response(streamed(FOLDER), request)


async def aiohttp_remote_read(request: web.Request) -> web.StreamResponse:
    return web.Response(text=str(REMOTE.read))


def aiohttp_app(argv: list[str] | None = None) -> web.Application:
    served = web.Application()
    served.router.add_get("/selection", aiohttp_pick)
    served.router.add_get("/streamed", aiohttp_flowing)
    served.router.add_get("/remote-read", aiohttp_remote_read)
    return served
