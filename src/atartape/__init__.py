"""atartape: a folder as a deterministic, resumable TAR stream, on asyncio and trio.

Record a folder once (:func:`record`), then play its tape from any byte offset
(:class:`TapePlayer`): every byte position is fixed before the first byte is sent.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    ArchiveFormatError,
    EntryNotFoundError,
    InvalidOffsetError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    TarIntegrityError,
    TarTapeError,
    UnsafeMemberError,
)
from .events import EventMetadata, TarEvent, TarEventType
from .header import EntryKind
from .layout import Entry
from .oneshot import TarTape
from .player import TapePlayer
from .recorder import TapeRecorder, record
from .tape import Tape

if TYPE_CHECKING:
    from ._wire import TransferError, TransferIntegrityError, TransferRefusedError
    from .archive import Archive, HttpRangeSource, LocalFileSource, RangeSource, open_archive
    from .locate import Fragment, Location
    from .members import IndexRow, Member, MemberType
    from .restore import restore_file
    from .units import format_size, parse_size
    from .verify import VerifyError, VerifyReport
    from .volumes import Volume, volume_count

# Imported on first use: reading archives, transfers and the rest are not needed to record and
# play, and importing everything up front doubles the start-up time of a small script.
_LAZY = {
    "TransferError": "._wire",
    "TransferIntegrityError": "._wire",
    "TransferRefusedError": "._wire",
    "Archive": ".archive",
    "HttpRangeSource": ".archive",
    "LocalFileSource": ".archive",
    "RangeSource": ".archive",
    "open_archive": ".archive",
    "Fragment": ".locate",
    "Location": ".locate",
    "IndexRow": ".members",
    "Member": ".members",
    "MemberType": ".members",
    "restore_file": ".restore",
    "format_size": ".units",
    "parse_size": ".units",
    "VerifyError": ".verify",
    "VerifyReport": ".verify",
    "Volume": ".volumes",
    "volume_count": ".volumes",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atartape' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Archive",
    "ArchiveFormatError",
    "Entry",
    "EntryKind",
    "EntryNotFoundError",
    "EventMetadata",
    "Fragment",
    "HttpRangeSource",
    "IndexRow",
    "InvalidOffsetError",
    "LocalFileSource",
    "Location",
    "Member",
    "MemberType",
    "PathConstraintError",
    "RangeSource",
    "SourceNotFoundError",
    "Tape",
    "TapeExistsError",
    "TapeFormatError",
    "TapeNotFoundError",
    "TapePlayer",
    "TapeRecorder",
    "TarEvent",
    "TarEventType",
    "TarIntegrityError",
    "TarTape",
    "TarTapeError",
    "TransferError",
    "TransferIntegrityError",
    "TransferRefusedError",
    "UnsafeMemberError",
    "VerifyError",
    "VerifyReport",
    "Volume",
    "__version__",
    "format_size",
    "open_archive",
    "parse_size",
    "record",
    "restore_file",
    "volume_count",
]
