"""atartape: a folder as a deterministic, resumable TAR stream, on asyncio and trio.

Record a folder once (:func:`record`), then play its tape from any byte offset
(:class:`TapePlayer`): every byte position is fixed before the first byte is sent.
"""

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
from ._wire import TransferError, TransferIntegrityError, TransferRefusedError
from .archive import Archive, HttpRangeSource, LocalFileSource, RangeSource, open_archive
from .events import EventMetadata, TarEvent, TarEventType
from .header import EntryKind
from .layout import Entry
from .locate import Fragment, Location
from .members import IndexRow, Member, MemberType
from .oneshot import TarTape
from .player import TapePlayer
from .recorder import TapeRecorder, record
from .restore import restore_file
from .tape import Tape
from .units import format_size, parse_size
from .verify import VerifyError, VerifyReport
from .volumes import Volume, volume_count

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
