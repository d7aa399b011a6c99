"""atartape: a folder as a deterministic, resumable TAR stream, on asyncio and trio.

Record a folder once (:func:`record`), then play its tape from any byte offset
(:class:`TapePlayer`): every byte position is fixed before the first byte is sent.

Every name below is imported on first use, so ``import atartape`` costs almost nothing and
``import atartape.format.header`` imports neither anyio nor sqlite3 (``__init__.pyi`` gives
type checkers the same names). The layers, from the bottom:
:mod:`atartape.format` (pure), ``atartape._engine`` (anyio and the disk), the library modules
(:mod:`~atartape.tape`, :mod:`~atartape.recorder`, :mod:`~atartape.player`, ...), and the edges
(:mod:`atartape.archive`, the HTTP front ends, :mod:`atartape.transfer`, :mod:`atartape.cli`).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# Every public name and the module that defines it.
_EXPORTS = {
    # the library
    "record": ".recorder",
    "TapeRecorder": ".recorder",
    "Tape": ".tape",
    "TapePlayer": ".player",
    "TarTape": ".oneshot",
    "Volume": ".volumes",
    "VerifyReport": ".verify",
    "Difference": ".verify",
    "VerifyError": ".verify",
    "restore_file": ".restore",
    "verify_volume": ".layouts",
    "TapeReader": ".syncio",
    # values
    "Entry": ".format.layout",
    "EntryKind": ".format.header",
    "TarEvent": ".format.events",
    "TarEventType": ".format.events",
    "EventMetadata": ".format.events",
    "Progress": ".format.events",
    "Location": ".format.windows",
    "Fragment": ".format.windows",
    "Layout": ".format.windows",
    "LayoutVolume": ".format.windows",
    "parse_size": ".format.units",
    "format_size": ".format.units",
    # reading archives
    "open_archive": ".archive",
    "Archive": ".archive",
    "Member": ".format.members",
    "MemberType": ".format.members",
    "RangeSource": ".archive",
    "LocalFileSource": ".archive",
    "HttpRangeSource": ".archive",
    # errors
    "TarTapeError": ".errors",
    "TapeNotFoundError": ".errors",
    "TapeExistsError": ".errors",
    "TapeFormatError": ".errors",
    "TapeChangedError": ".errors",
    "SourceNotFoundError": ".errors",
    "TarIntegrityError": ".errors",
    "PathConstraintError": ".errors",
    "DuplicateEntryError": ".errors",
    "InvalidOffsetError": ".errors",
    "EntryNotFoundError": ".errors",
    "LayoutNotFoundError": ".errors",
    "AmbiguousLayoutError": ".errors",
    "VolumeNotFoundError": ".errors",
    "ReadOnlyIndexError": ".errors",
    "ArchiveFormatError": ".errors",
    "UnsafeMemberError": ".errors",
    "NotAFileError": ".errors",
    "RangeSourceError": ".errors",
    "MissingDependencyError": ".errors",
    "InvalidArgumentError": ".errors",
    "ChecksumsNotRecordedError": ".errors",
    "TransferError": ".errors",
    "TransferRefusedError": ".errors",
    "TransferIntegrityError": ".errors",
    "TransferProtocolError": ".errors",
    "ViewError": ".errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atartape' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    # Shown as atartape.Tape in reprs and tracebacks, as it is imported.
    if isinstance(value, type) or callable(value):
        value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "AmbiguousLayoutError",
    "Archive",
    "ArchiveFormatError",
    "ChecksumsNotRecordedError",
    "Difference",
    "DuplicateEntryError",
    "Entry",
    "EntryKind",
    "EntryNotFoundError",
    "EventMetadata",
    "Fragment",
    "HttpRangeSource",
    "InvalidArgumentError",
    "InvalidOffsetError",
    "Layout",
    "LayoutNotFoundError",
    "LayoutVolume",
    "LocalFileSource",
    "Location",
    "Member",
    "MemberType",
    "MissingDependencyError",
    "NotAFileError",
    "PathConstraintError",
    "Progress",
    "RangeSource",
    "RangeSourceError",
    "ReadOnlyIndexError",
    "SourceNotFoundError",
    "Tape",
    "TapeChangedError",
    "TapeExistsError",
    "TapeFormatError",
    "TapeNotFoundError",
    "TapePlayer",
    "TapeReader",
    "TapeRecorder",
    "TarEvent",
    "TarEventType",
    "TarIntegrityError",
    "TarTape",
    "TarTapeError",
    "TransferError",
    "TransferIntegrityError",
    "TransferProtocolError",
    "TransferRefusedError",
    "UnsafeMemberError",
    "VerifyError",
    "VerifyReport",
    "ViewError",
    "Volume",
    "VolumeNotFoundError",
    "__version__",
    "format_size",
    "open_archive",
    "parse_size",
    "record",
    "restore_file",
    "verify_volume",
]
