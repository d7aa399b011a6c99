"""Type information for the lazily exported names of :mod:`atartape` (see ``__init__.py``)."""

from ._version import __version__
from .archive import (
    Archive,
    HttpRangeSource,
    LocalFileSource,
    RangeSource,
    open_archive,
)
from .errors import (
    ArchiveFormatError,
    DuplicateEntryError,
    EntryNotFoundError,
    InvalidOffsetError,
    NotAFileError,
    PathConstraintError,
    RangeSourceError,
    SourceNotFoundError,
    TapeChangedError,
    TapeExistsError,
    TapeFormatError,
    TapeNotFoundError,
    TarIntegrityError,
    TarTapeError,
    TransferError,
    TransferIntegrityError,
    TransferProtocolError,
    TransferRefusedError,
    UnsafeMemberError,
    ViewError,
)
from .format.events import (
    EventMetadata,
    Progress,
    TarEvent,
    TarEventType,
)
from .format.header import (
    EntryKind,
)
from .format.layout import (
    Entry,
)
from .format.members import (
    Member,
    MemberType,
)
from .format.units import (
    format_size,
    parse_size,
)
from .format.windows import (
    Fragment,
    Location,
)
from .oneshot import (
    TarTape,
)
from .player import (
    TapePlayer,
)
from .recorder import (
    TapeRecorder,
    record,
)
from .restore import (
    restore_file,
)
from .tape import (
    Tape,
)
from .verify import (
    Difference,
    VerifyError,
    VerifyReport,
)
from .volumes import (
    Volume,
)

__all__ = [
    "Archive",
    "ArchiveFormatError",
    "Difference",
    "DuplicateEntryError",
    "Entry",
    "EntryKind",
    "EntryNotFoundError",
    "EventMetadata",
    "Fragment",
    "HttpRangeSource",
    "InvalidOffsetError",
    "LocalFileSource",
    "Location",
    "Member",
    "MemberType",
    "NotAFileError",
    "PathConstraintError",
    "Progress",
    "RangeSource",
    "RangeSourceError",
    "SourceNotFoundError",
    "Tape",
    "TapeChangedError",
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
    "TransferProtocolError",
    "TransferRefusedError",
    "UnsafeMemberError",
    "VerifyError",
    "VerifyReport",
    "ViewError",
    "Volume",
    "__version__",
    "format_size",
    "open_archive",
    "parse_size",
    "record",
    "restore_file",
]
