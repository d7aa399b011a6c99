"""The engine: anyio and the disk, private to atartape.

- :mod:`.store`: one async interface over SQLite (aiosqlite on asyncio, worker threads on trio).
- :mod:`.index`: the index schema, its rows and queries, opened and pinned to a recording;
  :mod:`.tartape_catalog`: a tartape 3 catalog read as an index (imported here, so that
  ``open_index`` always reads them). :mod:`.session`: opening a play of a recorded tape.
- :mod:`.scan`: scanning a folder into entries. :mod:`.source`: the one check of a source
  entry against its promise, shared by playing and verifying.
- :mod:`.producer`, :mod:`.sinks`, :mod:`.feed`, :mod:`.play`: the play: rows in, events or
  bytes out, one async generator between the consumer and the worker threads.
- :mod:`.files`: files written whole or not at all, and exact reads.
"""

from . import tartape_catalog as _tartape_catalog  # noqa: F401  (registers its reader)
