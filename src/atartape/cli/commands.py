"""The commands that work on one tape: ``record``, ``info``, ``ls``, ``play``, ``verify``,
``locate``. Each takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio
import anyio.to_thread

from ..errors import EntryNotFoundError, TapeExistsError
from ..format.events import Progress
from ..format.units import format_size
from .common import (
    EXIT_OK,
    Stdout,
    UsageError,
    VerificationFailed,
    add_view_argument,
    folder_problem,
    message,
    open_tape,
    read_age_identity,
    with_progress,
)
from .parser import Commands, count, offset, size
from .progress import progress_bar

if TYPE_CHECKING:
    from ..tape import Tape

# The player, the recorder and the views are imported by the commands that use them: a command
# pays at start-up only for what it runs.

__all__ = ["info", "locate", "ls", "play", "record", "register", "verify"]


def register(commands: Commands) -> None:
    sub = commands.add(
        "record", "record a folder into a tape (scan it, write its index)", record, tape=False
    )
    sub.add_argument("src", metavar="SRC", help="the folder to record")
    sub.add_argument("--index", metavar="PATH", help="where to write the index")
    sub.add_argument(
        "--exclude", metavar="PATTERN", action="append", default=[], help="glob to leave out"
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing index")
    sub.add_argument(
        "--checksum", choices=("md5", "sha1", "sha256", "sha512"), help="store a digest per file"
    )
    sub.add_argument(
        "--keep-owners",
        action="store_true",
        help="keep uid, gid and user and group names in the headers (anonymize=False)",
    )
    sub.add_argument(
        "--auto-truncate",
        action="store_true",
        help="shorten paths too long for a tar header, keeping the originals in the index",
    )
    sub.add_argument(
        "--zstd",
        nargs="?",
        const=3,
        type=count,
        metavar="LEVEL",
        help="also a seekable zstd view (level 3 by default)",
    )
    sub.add_argument(
        "--frame-size", type=size, default="4MiB", help="plain bytes per zstd frame (4MiB)"
    )
    sub.add_argument(
        "--age-recipient",
        action="append",
        default=[],
        metavar="AGE1...",
        help="seal the tape for this age recipient (repeat for several)",
    )
    sub.add_argument(
        "--age-passphrase-file",
        metavar="FILE",
        help="seal the tape with the passphrase in FILE (its first line)",
    )
    sub.add_argument(
        "--work-factor", type=count, default=18, help="scrypt work factor of a passphrase (18)"
    )
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    sub = commands.add("info", "describe a recorded tape", info)
    sub.add_argument("--json", action="store_true", help="print the tape as JSON")

    commands.add("ls", "list the entries: start offset, size, type, path", ls)

    sub = commands.add("play", "write the tape's TAR stream (or a window of it)", play)
    sub.add_argument(
        "-o", "--output", metavar="OUT", help="file to write, or - for stdout (the default)"
    )
    sub.add_argument("--offset", type=offset, default=0, help="first byte to play (default 0)")
    sub.add_argument("--end", type=offset, help="byte to stop before (default: the end)")
    sub.add_argument(
        "--resume",
        action="store_true",
        help="continue a partial OUT from its current size (needs -o OUT)",
    )
    add_view_argument(sub)
    sub.add_argument(
        "--age-identity-file",
        metavar="FILE",
        help="open the seal with this age identity (or passphrase) file, without the key file",
    )
    sub.add_argument(
        "--part", type=offset, metavar="N", help="play only part N (from 1; needs --part-size)"
    )
    sub.add_argument("--part-size", type=size, metavar="S", help="bytes per part, for --part")

    sub = commands.add("verify", "check the source folder against the tape", verify)
    how = sub.add_mutually_exclusive_group()
    how.add_argument(
        "--sample",
        type=count,
        metavar="N",
        help="check only a canary sample: first, last, largest, newest and N at random",
    )
    how.add_argument("--deep", action="store_true", help="check every entry (the default)")
    sub.add_argument("--content", action="store_true", help="re-hash files (recorded digests)")

    sub = commands.add("locate", "where one file lies in the tape", locate)
    sub.add_argument("arc_path", metavar="ARC_PATH", help="the file's path in the tape")
    sub.add_argument(
        "--volume-size", metavar="SIZE", type=size, help="also its pieces per volume (64MiB)"
    )
    sub.add_argument("--json", action="store_true", help="print the location as JSON")


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
        "identity": tape.identity,
        "data_size": tape.data_size,
        "overhead_size": tape.overhead_size,
        "anonymized": tape.anonymized,
        "auto_truncated": tape.auto_truncated,
        "exclude_patterns": list(tape.exclude_patterns),
        "noise": list(tape.noise),
        "view": tape.view,
        "views": {view: tape.view_size(view) for view in tape.views},
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
            ("identity", tape.identity),
            ("content", f"{tape.data_size} bytes in files, {tape.overhead_size} of tar"),
            ("checksum", tape.checksum_algorithm or "none"),
            ("views", ", ".join(f"{v} ({tape.view_size(v)} bytes)" for v in tape.views)),
        ]
        for key, value in rows:
            await out.line(f"{key:<12} {value}")
    await out.flush()


# -------------------------------------------------------------------------------- commands


async def record(args: argparse.Namespace) -> int:
    from ..recorder import record as record_tape

    problem = await anyio.to_thread.run_sync(folder_problem, args.src)
    if problem is not None:
        raise problem
    progress = Progress()
    bar = progress_bar(None, label=f"recording {args.src}", quiet=args.quiet, unit=" entries")

    passphrase = None
    if args.age_passphrase_file:
        text = await anyio.to_thread.run_sync(_read_text, args.age_passphrase_file)
        passphrase = text.splitlines()[0] if text.strip() else ""
        if not passphrase:
            raise UsageError(f"{args.age_passphrase_file} holds no passphrase")

    async def work() -> Tape:
        return await record_tape(
            args.src,
            index_path=args.index,
            exclude=args.exclude or None,
            overwrite=args.overwrite,
            checksum=args.checksum,
            anonymize=not args.keep_owners,
            auto_truncate=args.auto_truncate,
            compress="zstd" if args.zstd is not None else None,
            level=args.zstd if args.zstd is not None else 3,
            frame_size=args.frame_size,
            seal=args.age_recipient,
            passphrase=passphrase,
            work_factor=args.work_factor,
            progress=progress,
        )

    def hashed(progress: Progress) -> str:
        return f"{format_size(progress.bytes, exact=False)} hashed" if args.checksum else ""

    try:
        tape = await with_progress(work, progress, bar, hashed)
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
    async with aclosing(tape.entries()) as entries:
        async for entry in entries:
            target = f" -> {entry.linkname}" if entry.linkname else ""
            if entry.source_path is not None:  # shortened to fit a header
                target += f"  (from {tape.arc_root}/{entry.source_path})"
            line = f"{entry.start_offset:>14} {entry.size:>14} {entry.kind.value:<7}"
            await out.line(f"{line} {entry.arc_path}{target}")
    await out.flush()
    return EXIT_OK


def _finish_output(handle: BinaryIO, close: bool) -> None:
    """Flush a play's output to disk (a regular file) and close it (unless it is stdout)."""
    try:
        handle.flush()
        fileno = handle.fileno()
        if stat.S_ISREG(os.fstat(fileno).st_mode):
            os.fsync(fileno)
    finally:
        if close:
            handle.close()


PIPE_SIZE = 1024 * 1024
"""What a pipe on stdout is widened to: with the default 64 KiB, writing 1 GiB through
``| cat`` took 1.4-3.2 s, against 0.5 s at 1 MiB (measured; GNU tar took 0.6-1.2 s)."""


def _widen_pipe(fd: int) -> None:
    """Give a pipe on ``fd`` a buffer of :data:`PIPE_SIZE` where the system allows it."""
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    try:
        if setter is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, setter, PIPE_SIZE)
    except OSError:
        pass  # over the limit of /proc/sys/fs/pipe-max-size, or the user's pipe quota: keep it


def _stdout_buffer() -> BinaryIO:
    return sys.stdout.buffer


RESUME_FORMAT = "atartape-play"


def resume_record_path(output: str) -> str:
    """Beside a file being played: which recording and window it holds part of."""
    return output + ".atartape"


def resume_record(tape: Tape, start: int, end: int, view: str = "plain") -> bytes:
    """What a play to a file writes beside it first, so that ``--resume`` can prove it."""
    from .. import views

    fields = {
        "format": RESUME_FORMAT,
        "identity": views.identity_of(tape.identity, view),
        "view": view,
        "start": start,
        "end": end,
        "total_size": tape.total_size,
    }
    return json.dumps(fields).encode()


def _begin_output(path: str, record: bytes) -> BinaryIO:
    """A fresh play to ``path``: the resume record first, then the file, truncated."""
    from .._engine import files

    files.write_atomically(resume_record_path(path), record)
    return open(path, "wb")


class _NoRecord(UsageError):
    """A file to resume without the record of its play: complete, or not atartape's."""

    def __init__(self, message: str, held: int) -> None:
        super().__init__(message)
        self.held = held


async def _first_difference(path: str, chunks: AsyncIterator[bytes]) -> int | None:
    """Where the file at ``path`` first differs from the bytes of ``chunks`` (``None``: it holds
    exactly them), reading both through."""
    at = 0
    async with await anyio.open_file(path, "rb") as held:
        async for chunk in chunks:
            found = await held.read(len(chunk))
            if found != chunk:
                return at + next(
                    (i for i, (a, b) in enumerate(zip(found, chunk, strict=False)) if a != b),
                    min(len(found), len(chunk)),
                )
            at += len(chunk)
        return None if await held.read(1) == b"" else at


def _continue_output(path: str, record: bytes, tape_name: str) -> tuple[BinaryIO, int]:
    """``path`` opened to append, after proving it holds part of this very play.

    Raises :class:`UsageError` (nothing changed) when its resume record is missing or names
    another recording or window.
    """
    try:
        held = os.path.getsize(path)
    except FileNotFoundError:
        return _begin_output(path, record), 0
    marker = resume_record_path(path)
    try:
        with open(marker, "rb") as marker_file:
            found = json.loads(marker_file.read())
    except FileNotFoundError:
        if held:
            raise _NoRecord(
                f"{path} holds {held} bytes but no record of the play it belongs to ({marker}): "
                "it was completed, or not written by 'atartape play -o'; nothing was changed",
                held,
            ) from None
        return _begin_output(path, record), 0
    except ValueError:
        raise UsageError(f"{marker} is damaged; nothing was changed") from None
    expected = json.loads(record)
    if found != expected:
        what = (
            "another recording of the tape, or another tape"
            if found.get("identity") != expected["identity"]
            else f"the window {found.get('start')}-{found.get('end')}"
        )
        raise UsageError(
            f"{path} holds part of {what}, not of {tape_name!r} "
            f"{expected['start']}-{expected['end']} as recorded now; nothing was changed "
            "(play without --resume to start over)"
        )
    # Not "ab": the kernel copies content only into a file not opened to append.
    output = open(path, "r+b")  # noqa: SIM115 - closed by the caller
    output.seek(held)
    return output, held


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _tail(path: str, size: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(size - length)
        return handle.read(length)


def _part_window(args: argparse.Namespace, total: int) -> tuple[int, int | None]:
    """``--offset``/``--end``, or the window of ``--part N`` of ``--part-size S`` bytes."""
    if args.part is None and args.part_size is None:
        return args.offset, args.end
    if args.part is None or args.part_size is None:
        raise UsageError("--part N and --part-size S go together")
    if args.offset or args.end is not None:
        raise UsageError("--part replaces --offset and --end: give one or the other")
    count = -(-total // args.part_size)
    if not 1 <= args.part <= count:
        raise UsageError(
            f"part {args.part} is outside the tape: {total} bytes in parts of "
            f"{args.part_size} bytes make parts 1 to {count}"
        )
    start = (args.part - 1) * args.part_size
    return start, min(start + args.part_size, total)


async def play(args: argparse.Namespace) -> int:
    from .._engine import files
    from ..format.layout import check_window
    from ..player import TapePlayer

    to_stdout = args.output in (None, "-")
    if args.resume and to_stdout:
        raise UsageError("--resume continues a file: give it with -o OUT")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a tar to a terminal: use -o OUT, or redirect stdout")
    tape = await open_tape(args)
    identity = await read_age_identity(args.age_identity_file)
    try:
        player = TapePlayer(tape, md5=False, view=args.view, age_identity=identity)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    window = check_window(player.size, *_part_window(args, player.size))
    start, end = window.start, window.end
    record = resume_record(tape, start, end, player.view)
    held = 0
    if to_stdout:
        handle = _stdout_buffer()
        await anyio.to_thread.run_sync(_widen_pipe, handle.fileno())
    elif args.resume:
        try:
            handle, held = await anyio.to_thread.run_sync(
                _continue_output, args.output, record, tape.name
            )
        except _NoRecord as missing:
            if missing.held != end - start:
                raise
            # The size of the whole play, and no record: a play that completed? Prove it.
            async with aclosing(player.chunks(start, end)) as chunks:
                differs = await _first_difference(args.output, chunks)
            if differs is not None:
                raise UsageError(
                    f"{args.output} has the size of the whole play but differs from the tape "
                    f"at byte {start + differs}, and no record says which play it is; "
                    "nothing was changed (play without --resume to start over)"
                ) from None
            message(args, f"{args.output} is complete: every byte checked against the tape")
            return EXIT_OK
    else:
        handle = await anyio.to_thread.run_sync(_begin_output, args.output, record)
    completed = False
    try:
        if held > end - start:
            raise UsageError(
                f"{args.output} holds {held} bytes, more than the {end - start} bytes "
                f"of the window {start}-{end}: it is not a partial play of this tape"
            )
        if held:
            # The record says which play this is; the last bytes held must be that play's too
            # (a file changed after it was cut short is not resumed).
            length = min(held, 64 * 1024)
            tail_start = start + held - length
            expected = b"".join([c async for c in player.chunks(tail_start, start + held)])
            found = await anyio.to_thread.run_sync(_tail, args.output, held, length)
            if found != expected:
                raise UsageError(
                    f"the last {length} bytes of {args.output} are not the tape's bytes there: "
                    "it changed since it was written; nothing was changed"
                )
            message(args, f"resuming {args.output} at byte {start + held} of {end}")
        progress = Progress()
        bar = progress_bar(end - start, initial=held, label=tape.name, quiet=args.quiet)

        async def work() -> int:
            return await player.write_to(handle.fileno(), start + held, end, progress=progress)

        await with_progress(
            work, progress, bar, lambda p: p.name, position=lambda p: held + p.bytes
        )
        completed = True
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_finish_output, handle, not to_stdout)
            if completed and not to_stdout:
                await anyio.to_thread.run_sync(
                    files.unlink_quietly, resume_record_path(args.output)
                )
    return EXIT_OK


async def verify(args: argparse.Namespace) -> int:
    from ..player import TapePlayer

    tape = await open_tape(args)
    if args.content and not tape.has_file_checksums:
        raise UsageError(
            f"tape {tape.name!r} was recorded without file digests, so --content has nothing "
            "to compare with: record it with 'atartape record --checksum sha256' "
            "(--overwrite to replace the index), or verify without --content"
        )
    deep = args.sample is None
    report = await TapePlayer(tape).verify(deep=deep, content=args.content, sample=args.sample or 0)
    out = Stdout()
    for problem in report.differences:
        await out.line(f"{problem.arc_path}: {problem.reason}: {problem.message}")
    await out.flush()
    of = f"{report.checked} of {tape.entry_count} entries"
    if deep:
        what = f"every entry ({report.checked}) and the index itself"
    else:
        what = f"a canary sample: {of} (first, last, largest, newest and {args.sample} at random)"
    if args.content:
        what += f", re-hashing {format_size(report.hashed_bytes, exact=False)}"
    if not report:
        differ = len(report.differences)
        raise VerificationFailed(
            f"checked {what} of {tape.name!r}: {differ} entr{'ies' if differ != 1 else 'y'} "
            "no longer match the tape"
        )
    message(args, f"checked {what} of {tape.name!r}: all hold")
    return EXIT_OK


def _candidates(path: str, arc_root: str, source_root: str) -> list[str]:
    """The archive paths a user may mean by ``path``: the archive path itself, a path inside
    the recorded folder ("sub/x" for "data/sub/x"), or a path on disk ("./data/sub/x")."""
    found = [path.strip("/")]
    relative = os.path.relpath(os.path.abspath(path), source_root)
    if relative == ".":
        found.append(arc_root)
    elif not relative.startswith(".."):
        found.append(f"{arc_root}/{relative.replace(os.sep, '/')}")
    found.append(f"{arc_root}/{os.path.normpath(path).strip('/')}")
    return list(dict.fromkeys(found))


async def locate(args: argparse.Namespace) -> int:
    tape = await open_tape(args)
    candidates = await anyio.to_thread.run_sync(
        _candidates, args.arc_path, tape.arc_root, tape.source_root
    )
    for candidate in candidates:
        try:
            location = await tape.locate(candidate, volume_size=args.volume_size)
            break
        except EntryNotFoundError:
            continue
    else:
        raise EntryNotFoundError(f"{args.arc_path!r} is not in the tape {tape.name!r}")
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
