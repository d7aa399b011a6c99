"""Reading archives back: any tar, from a file or any range source, listed, read and extracted.

``async with open_archive(source) as archive`` where ``source`` is a local path or any object with
a ``size`` and ``async read_range(start, end) -> bytes`` (a :class:`RangeSource`; an
:class:`HttpRangeSource` reads a URL with HTTP range requests). Extraction is safe by default
(see :mod:`atartape.archive.extract`).
"""

from __future__ import annotations

from ..format.members import Member, MemberType
from ..format.sparse import SparseMap
from .reader import Archive, open_archive
from .sources import HttpRangeSource, LocalFileSource, RangeSource

__all__ = [
    "Archive",
    "HttpRangeSource",
    "LocalFileSource",
    "Member",
    "MemberType",
    "RangeSource",
    "SparseMap",
    "open_archive",
]
