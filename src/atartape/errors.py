"""Every error atartape raises on purpose, in one hierarchy under :class:`TarTapeError`.

Where a built-in exception means the same thing, the error also subclasses it, so existing
``except FileNotFoundError`` or ``except ValueError`` clauses keep working::

    TarTapeError
    ├── TapeNotFoundError          (FileNotFoundError)  no index where one was looked for
    ├── TapeExistsError            (FileExistsError)    an index exists, overwrite is off
    ├── TapeFormatError                                 not a tape index, or a damaged one
    ├── TapeChangedError                                the index was re-recorded meanwhile
    ├── SourceNotFoundError        (FileNotFoundError)  the folder to record or play is gone
    ├── TarIntegrityError                               a source entry broke its promise
    ├── PathConstraintError        (ValueError)         paths that do not fit a USTAR header
    ├── DuplicateEntryError        (ValueError)         one archive path added twice
    ├── InvalidOffsetError         (ValueError)         an offset or window outside the tape
    ├── EntryNotFoundError         (KeyError)           no entry or member with that path
    ├── ArchiveFormatError                              an archive being read is corrupt
    ├── UnsafeMemberError                               extracting it would escape, or a device
    ├── NotAFileError                                   a member without content was read
    ├── RangeSourceError           (OSError)            a range source answered wrongly
    └── TransferError                                   a send or receive failed
        ├── TransferRefusedError                        refused before any byte moved
        ├── TransferIntegrityError                      received bytes differ from the sent
        └── TransferProtocolError                       a peer sent a malformed frame

Every message names the path or offset and what differed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ArchiveFormatError",
    "DuplicateEntryError",
    "EntryNotFoundError",
    "InvalidOffsetError",
    "NotAFileError",
    "PathConstraintError",
    "RangeSourceError",
    "SourceNotFoundError",
    "TapeChangedError",
    "TapeExistsError",
    "TapeFormatError",
    "TapeNotFoundError",
    "TarIntegrityError",
    "TarTapeError",
    "TransferError",
    "TransferIntegrityError",
    "TransferProtocolError",
    "TransferRefusedError",
    "UnsafeMemberError",
]


class TarTapeError(Exception):
    """Base class of every error raised by atartape on purpose."""


class TapeNotFoundError(TarTapeError, FileNotFoundError):
    """No tape index exists where one was looked for."""


class TapeExistsError(TarTapeError, FileExistsError):
    """A tape index already exists and ``overwrite`` was not given."""


class TapeFormatError(TarTapeError):
    """A file is not a tape index of a version this library reads, or its rows contradict
    each other (a damaged or edited index)."""


class TapeChangedError(TarTapeError):
    """The index now holds another recording than the one a play, response or transfer was
    planned with (it was re-recorded meanwhile); raised before any byte of the new one."""


class SourceNotFoundError(TarTapeError, FileNotFoundError):
    """The folder to record, or the source tree of a tape, is missing or not a folder."""


class TarIntegrityError(TarTapeError):
    """A source entry no longer matches the promise in the index (size, mtime, type, content).

    The stream stops before any byte of the offending entry is sent, or, when the file changes
    while it is being read, before any byte read after the change. ``arc_path`` names it;
    ``reason`` says what differed: ``"missing"``, ``"type"``, ``"size"``, ``"mtime"`` (for a
    folder: names were added or removed), ``"content"`` (a symlink's target, a digest, bytes of a
    stream) or ``"unreadable"``.
    """

    def __init__(
        self, message: str, *, arc_path: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.arc_path = arc_path
        self.reason = reason


class PathConstraintError(TarTapeError, ValueError):
    """One or more paths cannot be stored in a 512-byte USTAR header.

    ``violations`` lists every offending path with the reason, not only the first.
    """

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        self.violations = list(violations)
        lines = [f"{path!r}: {reason}" for path, reason in self.violations]
        count = len(self.violations)
        super().__init__(
            f"{count} path{'s' if count != 1 else ''} cannot be stored in a tape:\n  "
            + "\n  ".join(lines)
        )


class DuplicateEntryError(TarTapeError, ValueError):
    """Two entries of a one-shot tape have the same archive path."""


class InvalidOffsetError(TarTapeError, ValueError):
    """An offset or window lies outside ``[0, total_size]`` or ends before it starts."""


class EntryNotFoundError(TarTapeError, KeyError):
    """The tape (or archive) has no entry with that archive path."""

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument; keep the plain message.
        return str(self.args[0]) if self.args else ""


class ArchiveFormatError(TarTapeError):
    """An archive being read is truncated or corrupt; the message gives the offset."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class UnsafeMemberError(TarTapeError):
    """Extracting this archive member would write outside the destination, or a device."""

    def __init__(self, message: str, *, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


class NotAFileError(TarTapeError):
    """The content of a member that has none (a folder, a symlink, a device) was asked for."""


class RangeSourceError(TarTapeError, OSError):
    """A range source (an HTTP server, an object store) answered a range request wrongly."""


class TransferError(TarTapeError):
    """A transfer could not be completed (peer unreachable after every retry, peer failed)."""


class TransferRefusedError(TransferError):
    """The transfer was refused before any byte moved, and nothing was changed.

    The receiver holds part of another tape, its partial file cannot be trusted, the output
    file already exists, or the sender could not prove it may write here.
    """


class TransferIntegrityError(TransferError):
    """Received bytes differ from the sender's: a segment digest or the final digest mismatched.

    Only bytes that were checked are ever kept; the message says which segment or digest.
    """


class TransferProtocolError(TransferError):
    """A peer sent a malformed, corrupt or unexpected frame. The connection is dropped."""
