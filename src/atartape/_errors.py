"""The exception hierarchy: every error atartape raises on purpose is a ``TarTapeError``."""

from __future__ import annotations

from collections.abc import Sequence


class TarTapeError(Exception):
    """Base class of every error raised by atartape on purpose."""


class TarIntegrityError(TarTapeError):
    """A source file no longer matches the promise in the index (size, mtime, type or content).

    The stream stops before any byte of the offending entry is sent, or, when the file changes
    while it is being read, as soon as the difference is seen.
    """

    def __init__(self, message: str, *, arc_path: str | None = None) -> None:
        super().__init__(message)
        self.arc_path = arc_path


class InvalidOffsetError(TarTapeError, ValueError):
    """An offset or window lies outside ``[0, total_size]`` or ends before it starts."""


class PathConstraintError(TarTapeError):
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


class TapeNotFoundError(TarTapeError, FileNotFoundError):
    """No tape index exists where one was looked for."""


class TapeExistsError(TarTapeError, FileExistsError):
    """A tape index already exists and ``overwrite`` was not given."""


class SourceNotFoundError(TarTapeError, FileNotFoundError):
    """The folder to record, or the source tree of a tape, is missing or not a folder."""


class TapeFormatError(TarTapeError):
    """A file is not a tape index of a version this library reads."""


class EntryNotFoundError(TarTapeError, KeyError):
    """The tape has no entry with that archive path."""

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
