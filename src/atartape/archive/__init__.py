"""Reading archives back: any tar, from a file or any range source, listed, read and extracted.

``async with open_archive(source) as archive`` where ``source`` is a local path or any object with
a ``size`` and ``async read_range(start, end) -> bytes`` (a :class:`RangeSource`; an
:class:`HttpRangeSource` reads a URL with HTTP range requests). Extraction is safe by default
(see :mod:`atartape.archive.extract`).

Compressed and sealed archives are told from their first bytes: age files (with
``age_identity=``) through :class:`AgeSource`, seekable zstd through :class:`SeekableZstdSource`
(both by range), gzip, bzip2, xz and zstd streams through :class:`StreamedSource` (from the
start, in bounded memory).
"""

from __future__ import annotations

from ..format.members import Member, MemberType
from ..format.sparse import SparseMap
from .decoded import AgeSource, SeekableZstdSource
from .reader import Archive, open_archive
from .sources import HttpRangeSource, LocalFileSource, RangeSource
from .streams import StreamedSource

__all__ = [
    "AgeSource",
    "Archive",
    "HttpRangeSource",
    "LocalFileSource",
    "Member",
    "MemberType",
    "RangeSource",
    "SeekableZstdSource",
    "SparseMap",
    "StreamedSource",
    "open_archive",
]
