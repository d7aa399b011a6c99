"""Benchmark the HTTP front ends: a 512 MiB tape against the same bytes sent from memory.

    python bench/http_bench.py [--size-mib 512] [--runs 5] [--dir DIR]

Makes a tape of a few large files in a temporary folder, then, over loopback, times curl
(``-s -o /dev/null -w '%{time_total}'``) fetching it from

- uvicorn: ``atartape.asgi.TapeApp`` vs a bare ASGI app sending the tar bytes from memory in
  64 KiB pieces (and Starlette's ``FileResponse`` of the same tar written to disk, for scale);
- aiohttp: ``atartape.aiohttp.tape_response`` vs a bare handler writing the bytes from memory in
  64 KiB pieces.

Each server is its own process (this script with ``--serve``), on the default event loop of its
framework (uvicorn picks uvloop when installed). Contenders alternate, after one warm-up fetch
each; the medians and the ratio tape/bare are printed (goal: at most 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PIECE = 64 * 1024
GOAL = 1.5


# ----------------------------------------------------------------------------- the servers


async def tar_bytes(folder: str) -> bytes:
    import atartape

    tape = await atartape.Tape.discover(folder)
    player = atartape.TapePlayer(tape, source_root=folder)
    return b"".join([chunk async for chunk in player.chunks()])


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
            await send(
                {"type": "http.response.body", "body": data[at : at + PIECE], "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})

    return app


def file_asgi(path: str) -> Any:
    from starlette.responses import FileResponse

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await FileResponse(path, media_type="application/x-tar")(scope, receive, send)

    return app


def aiohttp_app(kind: str, folder: str) -> Any:
    from aiohttp import web

    import atartape
    from atartape.aiohttp import tape_response

    data = asyncio.run(tar_bytes(folder)) if kind == "aiohttp-bare" else b""
    tape = asyncio.run(atartape.Tape.discover(folder))

    async def tape_handler(request: web.Request) -> web.StreamResponse:
        return await tape_response(tape, request, source_root=folder)

    async def bare_handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        response.content_length = len(data)
        await response.prepare(request)
        for at in range(0, len(data), PIECE):
            await response.write(data[at : at + PIECE])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", tape_handler if kind == "aiohttp-tape" else bare_handler)
    return app


def serve(kind: str, port: int, folder: str, tar_path: str) -> None:
    if kind.startswith("aiohttp"):
        from aiohttp import web

        web.run_app(aiohttp_app(kind, folder), host="127.0.0.1", port=port, print=None)
        return
    import uvicorn

    from atartape.asgi import TapeApp

    if kind == "asgi-tape":
        app: Any = TapeApp(folder)
    elif kind == "asgi-bare":
        app = bare_asgi(asyncio.run(tar_bytes(folder)))
    else:
        app = file_asgi(tar_path)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


# ----------------------------------------------------------------------------- the driver


def make_tape(root: Path, size: int) -> Path:
    import anyio

    import atartape

    folder = root / "dataset"
    folder.mkdir()
    block = os.urandom(1 << 20)
    files = 4
    for i in range(files):
        with open(folder / f"part{i}.bin", "wb") as f:
            for _ in range(size // files // len(block)):
                f.write(block)
    anyio.run(atartape.record, folder)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(kind: str, folder: Path, tar_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, str(port), str(folder), str(tar_path)]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 120  # the bare servers build the tar in memory first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{kind} server did not start")


def fetch(url: str, size: int) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    if int(out[1]) != size:
        raise RuntimeError(f"{url}: got {out[1]} bytes, expected {size}")
    return float(out[0])


def race(urls: dict[str, str], size: int, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {kind: [] for kind in urls}
    for url in urls.values():
        fetch(url, size)  # warm-up: page cache, imports, first connection
    for _ in range(runs):
        for kind, url in urls.items():
            times[kind].append(fetch(url, size))
    for kind, samples in times.items():
        print(f"  {kind:13s} " + " ".join(f"{t:.3f}" for t in samples))
    return {kind: statistics.median(samples) for kind, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", help="where to make the tape (default: a temporary folder)")
    parser.add_argument("--serve", nargs=4, metavar=("KIND", "PORT", "FOLDER", "TAR"))
    args = parser.parse_args()
    if args.serve:
        kind, port, folder, tar_path = args.serve
        serve(kind, int(port), folder, tar_path)
        return
    if shutil.which("curl") is None:
        sys.exit("curl is needed")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = make_tape(Path(tmp), args.size_mib << 20)
        data = asyncio.run(tar_bytes(str(folder)))
        size = len(data)
        tar_path = Path(tmp, "dataset.tar")
        tar_path.write_bytes(data)
        del data
        print(f"tape: {size / 2**20:.1f} MiB, {args.runs} runs each, median seconds")
        results: dict[str, float] = {}
        for group in (("asgi-tape", "asgi-bare", "asgi-file"), ("aiohttp-tape", "aiohttp-bare")):
            procs = {kind: start(kind, folder, tar_path) for kind in group}
            try:
                print("uvicorn:" if group[0].startswith("asgi") else "aiohttp:")
                results |= race({k: url for k, (_, url) in procs.items()}, size, args.runs)
            finally:
                for proc, _ in procs.values():
                    proc.terminate()
                    proc.wait()
    print()
    for label, tape, bare in (
        ("uvicorn TapeApp / bare ASGI", "asgi-tape", "asgi-bare"),
        ("aiohttp tape_response / bare", "aiohttp-tape", "aiohttp-bare"),
    ):
        ratio = results[tape] / results[bare]
        verdict = "ok" if ratio <= GOAL else "MISSED"
        print(
            f"{label:30s} {results[tape]:.3f} s / {results[bare]:.3f} s = {ratio:.2f}x "
            f"(goal <= {GOAL}x: {verdict})"
        )
    print(
        f"{'uvicorn FileResponse / TapeApp':30s} {results['asgi-file']:.3f} s / "
        f"{results['asgi-tape']:.3f} s = {results['asgi-file'] / results['asgi-tape']:.2f}x"
    )


if __name__ == "__main__":
    main()
