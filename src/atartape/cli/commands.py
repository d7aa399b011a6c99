"""The commands that work on one tape: ``record``, ``info``, ``ls``, ``play``, ``verify``,
``locate``. Each takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from contextlib import aclosing
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from ..errors import EntryNotFoundError, SourceNotFoundError, TapeExistsError
from ..format.events import TarEventType
from ..format.layout import check_window
from ..format.units import format_size
from ..player import TapePlayer
from ..recorder import record as record_tape
from ..tape import Tape
from .common import (
    EXIT_OK,
    Stdout,
    UsageError,
    VerificationFailed,
    message,
    open_tape,
)
from .progress import progress_bar


def _tape_fields(tape: Tape) -> dict[str, Any]:
    return {
        "name": tape.name,
        "fingerprint": tape.fingerprint,
        "total_size": tape.total_size,
        "entry_count": tape.entry_count,
        "file_count": tape.file_count,
        "recorded_at": tape.recorded_at.isoformat(),
        "source_root": tape.source_root,
        "index_path": tape.index_path,
        "checksum": tape.checksum_algorithm,
    }


async def _print_tape(tape: Tape, as_json: bool) -> None:
    out = Stdout()
    if as_json:
        await out.line(json.dumps(_tape_fields(tape), indent=2))
    else:
        size = tape.total_size
        rows = [
            ("tape", tape.name),
            ("fingerprint", tape.fingerprint),
            ("total size", f"{tape.total_size} bytes ({format_size(size, exact=False)})"),
            ("entries", f"{tape.entry_count} ({tape.file_count} files)"),
            ("recorded at", tape.recorded_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("source", tape.source_root),
            ("index", tape.index_path),
            ("checksum", tape.checksum_algorithm or "none"),
        ]
        for key, value in rows:
            await out.line(f"{key:<12} {value}")
    await out.flush()


# -------------------------------------------------------------------------------- commands


async def record(args: argparse.Namespace) -> int:
    if not await anyio.to_thread.run_sync(os.path.isdir, args.src):
        raise SourceNotFoundError(f"folder {args.src!r} does not exist")
    try:
        tape = await record_tape(
            args.src,
            index_path=args.index,
            exclude=args.exclude or None,
            overwrite=args.overwrite,
            checksum=args.checksum,
        )
    except TapeExistsError as exc:
        raise TapeExistsError(str(exc).replace("pass overwrite=True", "use --overwrite")) from None
    await _print_tape(tape, args.json)
    return EXIT_OK


async def info(args: argparse.Namespace) -> int:
    await _print_tape(await open_tape(args), args.json)
    return EXIT_OK


async def ls(args: argparse.Namespace) -> int:
    tape = await open_tape(args)
    out = Stdout()
    async for entry in tape.entries():
        target = f" -> {entry.linkname}" if entry.linkname else ""
        line = f"{entry.start_offset:>14} {entry.size:>14} {entry.kind.value:<7}"
        await out.line(f"{line} {entry.arc_path}{target}")
    await out.flush()
    return EXIT_OK


class _Sink:
    """Bytes to a file, buffered up to ``limit`` and written from worker threads."""

    def __init__(self, handle: BinaryIO, limit: int = 1024 * 1024) -> None:
        self.handle = handle
        self.limit = limit
        self.parts: list[bytes] = []
        self.buffered = 0

    async def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.buffered += len(data)
        if self.buffered >= self.limit:
            await self.flush()

    async def flush(self) -> None:
        parts, self.parts, self.buffered = self.parts, [], 0
        if parts:
            await anyio.to_thread.run_sync(self.handle.writelines, parts)

    async def close(self) -> None:
        """Flush, fsync (a regular file) and close; runs shielded, so even when cancelled."""
        with anyio.CancelScope(shield=True):
            try:
                await self.flush()
                await anyio.to_thread.run_sync(self._sync)
            finally:
                if self.handle is not _stdout_buffer():
                    await anyio.to_thread.run_sync(self.handle.close)

    def _sync(self) -> None:
        self.handle.flush()
        fileno = self.handle.fileno()
        if stat.S_ISREG(os.fstat(fileno).st_mode):
            os.fsync(fileno)


def _stdout_buffer() -> BinaryIO:
    return sys.stdout.buffer


def _open_output(path: str, resume: bool) -> tuple[BinaryIO, int]:
    """Open ``path`` to write (append when resuming); return it and the bytes it holds."""
    if resume:
        handle = open(path, "ab")  # noqa: SIM115 - closed by _Sink.close
        return handle, handle.seek(0, os.SEEK_END)
    return open(path, "wb"), 0


async def play(args: argparse.Namespace) -> int:
    to_stdout = args.output in (None, "-")
    if args.resume and to_stdout:
        raise UsageError("--resume continues a file: give it with -o OUT")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal: use -o OUT, or redirect stdout")
    tape = await open_tape(args)
    window = check_window(tape.total_size, args.offset, args.end)
    start, end = window.start, window.end
    if to_stdout:
        handle, held = _stdout_buffer(), 0
    else:
        handle, held = await anyio.to_thread.run_sync(_open_output, args.output, args.resume)
    sink = _Sink(handle)
    try:
        if held > end - start:
            raise UsageError(
                f"{args.output} holds {held} bytes, more than the {end - start} bytes "
                f"of the window {start}-{end}: it is not a partial play of this tape"
            )
        if held:
            message(args, f"resuming {args.output} at byte {start + held} of {end}")
        player = TapePlayer(tape, md5=False)
        position = start + held
        with progress_bar(end - start, initial=held, label=tape.name, quiet=args.quiet) as bar:
            if bar.enabled:
                async with aclosing(player.play(position, end)) as events:
                    async for event in events:
                        if event.type is TarEventType.FILE_START and event.entry is not None:
                            bar.set_file(event.entry.arc_path)
                        elif event.data:
                            await sink.write(event.data)
                            bar.update_to(event.metadata.end_offset - start)
            else:
                async with aclosing(player.chunks(position, end)) as chunks:
                    async for chunk in chunks:
                        await sink.write(chunk)
    finally:
        await sink.close()
    return EXIT_OK


async def verify(args: argparse.Namespace) -> int:
    tape = await open_tape(args)
    report = await TapePlayer(tape).verify(deep=args.deep, content=args.content)
    out = Stdout()
    for problem in report.differences:
        await out.line(f"{problem.arc_path}: {problem.reason}: {problem.message}")
    await out.flush()
    kind = "deep check" if args.deep else "canary check"
    if not report:
        count = len(report.differences)
        raise VerificationFailed(
            f"{kind} of {tape.name!r}: {count} entr{'ies' if count != 1 else 'y'} "
            "no longer match the tape"
        )
    message(args, f"{kind} of {tape.name!r}: {report.checked} entries hold")
    return EXIT_OK


async def locate(args: argparse.Namespace) -> int:
    tape = await open_tape(args)
    try:
        location = await tape.locate(args.arc_path, volume_size=args.volume_size)
    except EntryNotFoundError:
        # Accept a path relative to the tape's root folder too: "sub/file" for "data/sub/file".
        if args.arc_path.startswith(tape.arc_root + "/"):
            raise
        fuller = f"{tape.arc_root}/{args.arc_path.strip('/')}"
        location = await tape.locate(fuller, volume_size=args.volume_size)
    out = Stdout()
    header = location.range_header
    if args.json:
        fields = {
            "arc_path": location.arc_path,
            "kind": location.kind.value,
            "start_offset": location.start_offset,
            "data_offset": location.data_offset,
            "size": location.size,
            "end_offset": location.end_offset,
            "range": header["Range"] if header else None,
            "volume_size": location.volume_size,
            "fragments": [
                {
                    "volume_index": f.volume_index,
                    "offset_in_volume": f.offset_in_volume,
                    "length": f.length,
                    "range": f.range_header["Range"],
                }
                for f in location.fragments
            ],
        }
        await out.line(json.dumps(fields, indent=2))
    else:
        rows = [
            ("path", location.arc_path),
            ("type", location.kind.value),
            ("start", str(location.start_offset)),
            ("data", str(location.data_offset)),
            ("size", str(location.size)),
            ("end", str(location.end_offset)),
            ("range", header["Range"] if header else "(empty)"),
        ]
        for key, value in rows:
            await out.line(f"{key:<7} {value}")
        if location.volume_size is not None:
            for f in location.fragments:
                await out.line(
                    f"volume {f.volume_index}: offset {f.offset_in_volume} length {f.length} "
                    f"range {f.range_header['Range']}"
                )
    await out.flush()
    return EXIT_OK
