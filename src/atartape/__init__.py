"""atartape: a folder as a deterministic, resumable TAR stream, on asyncio and trio.

Record a folder once (:func:`record`), then play its tape from any byte offset
(:class:`TapePlayer`): every byte position is fixed before the first byte is sent.
"""

from ._errors import (
    EntryNotFoundError,
    InvalidOffsetError,
    PathConstraintError,
    SourceNotFoundError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    TarIntegrityError,
    TarTapeError,
)
from .events import EventMetadata, TarEvent, TarEventType
from .header import EntryKind
from .layout import Entry
from .oneshot import TarTape
from .player import TapePlayer
from .recorder import TapeRecorder, record
from .tape import Tape

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "EntryKind",
    "EntryNotFoundError",
    "EventMetadata",
    "InvalidOffsetError",
    "PathConstraintError",
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
    "__version__",
    "record",
]
