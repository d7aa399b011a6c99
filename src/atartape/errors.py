"""Every error atartape raises on purpose, in one hierarchy under :class:`TarTapeError`.

Where a built-in exception means the same thing, the error also subclasses it, so existing
``except FileNotFoundError`` or ``except ValueError`` clauses keep working::

    TarTapeError
    ├── TapeNotFoundError          (FileNotFoundError)  no index where one was looked for
    ├── TapeExistsError            (FileExistsError)    an index exists, overwrite is off
    ├── TapeFormatError                                 not a tape index, or a damaged one
    ├── TapeChangedError                                the index was re-recorded meanwhile
    ├── ViewError                                       a compressed or sealed view cannot be made
    ├── SourceNotFoundError        (FileNotFoundError)  the folder to record or play is gone
    ├── TarIntegrityError                               a source entry broke its promise
    ├── PathConstraintError        (ValueError)         paths that do not fit a USTAR header
    ├── DuplicateEntryError        (ValueError)         one archive path added twice
    ├── InvalidOffsetError         (ValueError)         an offset or window outside the tape
    ├── EntryNotFoundError         (KeyError)           no entry or member with that path
    ├── LayoutNotFoundError        (KeyError)           no layout with that tag in the index
    ├── AmbiguousLayoutError       (ValueError)         which layout is meant cannot be told
    ├── VolumeNotFoundError        (KeyError, InvalidOffsetError)  no such volume in a layout
    ├── ReadOnlyIndexError         (PermissionError)    the index cannot be written to
    ├── ArchiveFormatError                              an archive being read is corrupt
    ├── UnsafeMemberError                               extracting it would escape, or a device
    ├── NotAFileError                                   a member without content was read
    ├── RangeSourceError           (OSError)            a range source answered wrongly
    ├── MissingDependencyError     (ImportError)        an optional dependency is not installed
    ├── InvalidArgumentError       (ValueError)         an argument out of its domain
    │   └── ChecksumsNotRecordedError                   a content check of a tape without digests
    └── TransferError                                   a send or receive failed
        ├── TransferRefusedError                        refused before any byte moved
        ├── TransferIntegrityError                      received bytes differ from the sent
        └── TransferProtocolError                       a peer sent a malformed frame

Every message names the path or offset and what differed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AmbiguousLayoutError",
    "ArchiveFormatError",
    "ChecksumsNotRecordedError",
    "DuplicateEntryError",
    "EntryNotFoundError",
    "InvalidArgumentError",
    "InvalidOffsetError",
    "LayoutNotFoundError",
    "MissingDependencyError",
    "NotAFileError",
    "PathConstraintError",
    "RangeSourceError",
    "ReadOnlyIndexError",
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
    "ViewError",
    "VolumeNotFoundError",
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


class ViewError(TarTapeError):
    """A compressed or sealed view of a tape cannot give the bytes it promised: the running zstd
    build compresses differently than the one it was recorded with, or the key to seal it is
    missing or wrong. Raised before any byte that could differ."""


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

    def __init__(
        self, violations: Sequence[tuple[str, str]], *, auto_truncate: bool = False
    ) -> None:
        self.violations = list(violations)
        lines = [f"{path!r}: {reason}" for path, reason in self.violations]
        count = len(self.violations)
        remedy = (
            ""
            if auto_truncate
            else "\n(record with auto_truncate=True, or --auto-truncate, to shorten long paths "
            "deterministically and keep the originals in the index)"
        )
        super().__init__(
            f"{count} path{'s' if count != 1 else ''} cannot be stored in a tape:\n  "
            + "\n  ".join(lines)
            + remedy
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


class LayoutNotFoundError(TarTapeError, KeyError):
    """The index has no layout with that tag (see :meth:`Tape.get_layout`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AmbiguousLayoutError(TarTapeError, ValueError):
    """Which layout is meant cannot be told: several are registered and none is the default,
    or a size reads as one layout's in powers of 1024 and as another number in powers of 1000
    (``"64KB"`` against a layout of 64 KiB volumes)."""


class VolumeNotFoundError(InvalidOffsetError, KeyError):
    """A layout has no volume with that index (or, for a downloaded file, that name)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ReadOnlyIndexError(TarTapeError, PermissionError):
    """The index cannot be written to (a read-only file or place, or a tartape 3 catalog,
    which atartape reads but never writes); nothing was changed."""


class ArchiveFormatError(TarTapeError):
    """An archive being read is truncated or corrupt; the message gives the offset."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class UnsafeMemberError(TarTapeError):
    """Extracting this archive member is refused: it would write outside the destination (or
    make an earlier link lead outside), it is a device, or the file system cannot hold its name
    or content (too long, a NUL byte, too large). ``member`` names it."""

    def __init__(self, message: str, *, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


class NotAFileError(TarTapeError):
    """The content of a member that has none (a folder, a symlink, a device) was asked for."""


class RangeSourceError(TarTapeError, OSError):
    """A range source (an HTTP server, an object store) answered a range request wrongly."""


class MissingDependencyError(TarTapeError, ImportError):
    """What was asked needs an optional dependency that is not installed. The message names the
    extra that installs it (``pip install 'atartape[zstd]'``); ``name`` is the module that could
    not be imported and ``extra`` that extra."""

    def __init__(self, message: str, *, name: str | None = None, extra: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.extra = extra


class InvalidArgumentError(TarTapeError, ValueError):
    """An argument is outside its domain (a negative count, an unknown name, a bad key), or
    two arguments contradict each other; nothing was done. The message names the argument."""


class ChecksumsNotRecordedError(InvalidArgumentError):
    """A check of content was asked of a tape recorded without digests of its files: there is
    nothing to compare with (record with ``checksum="sha256"``, ``record --checksum sha256``)."""


class TransferError(TarTapeError):
    """A transfer could not be completed (peer unreachable after every retry, peer failed)."""


class TransferRefusedError(TransferError):
    """The transfer was refused before any byte moved, and nothing was changed.

    The receiver holds part of another tape, its partial file cannot be trusted, the output
    file already exists, or the sender could not prove it may write here.

    ``reason`` names why, as the refusal on the wire does (``"wrong-code"``,
    ``"damaged-partial"``, ``"another-recording"``, ``"another-tape"``, ``"busy"``,
    ``"completed"``, ``"other"``; see :class:`atartape.format.wire.Refusal`), or is ``""`` for
    a refusal that concerns no peer (an existing output file, the other mode); ``offset`` is the
    byte where a damaged partial file stops matching what was checked, when it is known.
    """

    def __init__(self, *args: object, reason: str = "", offset: int | None = None) -> None:
        super().__init__(*args)
        self.reason = reason
        self.offset = offset


class TransferIntegrityError(TransferError):
    """Received bytes differ from the sender's: a segment digest or the final digest mismatched.

    Only bytes that were checked are ever kept; the message says which segment or digest.
    """


class TransferProtocolError(TransferError):
    """A peer sent a malformed, corrupt or unexpected frame. The connection is dropped."""
