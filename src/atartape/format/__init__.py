"""The TAR format and the arithmetic of tapes: pure functions and small immutable values.

Nothing here does I/O or imports anyio, sqlite3 or any other part of atartape but
:mod:`atartape.errors`: bytes and numbers go in, values come out. Every module can be imported
and tested alone (think h11).

- :mod:`~atartape.format.paths`: what an archive path may be, and how it fits a USTAR header.
- :mod:`~atartape.format.header`: writing and decoding 512-byte header blocks.
- :mod:`~atartape.format.layout`: entries, their offsets, windows and the fingerprint.
- :mod:`~atartape.format.windows`: volumes, ranges cut at volume boundaries, file locations.
- :mod:`~atartape.format.units`: byte sizes written by people (``"64MiB"``).
- :mod:`~atartape.format.events`: the events a play produces.
- :mod:`~atartape.format.members`: reading any tar's headers into members (ustar, GNU, PAX).
- :mod:`~atartape.format.sparse`: the sparse maps of GNU and PAX sparse members, and where their
  data lands.
- :mod:`~atartape.format.embedded`: the embedded index CSV, written and found again.
- :mod:`~atartape.format.http`: HTTP range and validator planning.
- :mod:`~atartape.format.wire`: the transfer protocol's frames, codes and digest chain.
- :mod:`~atartape.format.folders`: which names a folder's listing holds, and the OS noise in it.
- :mod:`~atartape.format.age`: age v1 sealing at any offset (STREAM chunks, headers, keys).
- :mod:`~atartape.format.zstd_seekable`: the Zstandard seekable format: frames and seek table.
"""

__all__ = []
