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
    AmbiguousLayoutError,
    ArchiveFormatError,
    ChecksumsNotRecordedError,
    DuplicateEntryError,
    EntryNotFoundError,
    InvalidArgumentError,
    InvalidOffsetError,
    LayoutNotFoundError,
    MissingDependencyError,
    NotAFileError,
    PathConstraintError,
    RangeSourceError,
    ReadOnlyIndexError,
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
    VolumeNotFoundError,
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
    Layout,
    LayoutVolume,
    Location,
)
from .layouts import (
    verify_volume,
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
from .syncio import (
    TapeReader,
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
