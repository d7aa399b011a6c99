"""Synthetic tape indexes of any size, for the benchmark and the scale tests.

A million real files would take minutes to make; an index that promises a million empty files
takes seconds. Only the last ``materialize`` files exist on disk, which is enough to play the
tail of the tape (a resume near the end), the case these indexes exist to measure.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from atartape._engine import index
from atartape._engine.index import Row
from atartape.format.header import EntryKind
from atartape.format.layout import Entry, assign_offsets, fingerprint, identity


def write_synthetic_index(
    index_path: str | os.PathLike[str],
    source_root: str | os.PathLike[str],
    n_entries: int,
    *,
    materialize: int = 16,
) -> None:
    """Write an index of ``n_entries`` empty files ``<root>/f<number>`` (synchronous).

    The last ``materialize`` files are created under ``source_root`` with the size and mtime
    the index promises, so the tail of the tape plays.
    """
    root = os.fspath(source_root)
    arc_root = os.path.basename(os.path.abspath(root))
    os.makedirs(root, exist_ok=True)
    width = len(str(n_entries))
    names = [f"f{i:0{width}d}" for i in range(n_entries)]
    mtime_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000
    for name in names[-materialize:]:
        path = os.path.join(root, name)
        with open(path, "wb"):
            pass
        os.utime(path, ns=(mtime_ns, mtime_ns))
    starts, total = assign_offsets(0 for _ in names)
    entries = [
        Entry(
            f"{arc_root}/{name}", EntryKind.FILE, 0, 0o644, mtime_ns // 10**9, start, "", mtime_ns
        )
        for name, start in zip(names, starts)
    ]
    meta = {
        "format": index.FORMAT,
        "version": index.VERSION,
        "fingerprint": fingerprint(entries),
        "total_size": total,
        "entry_count": len(entries),
        "file_count": len(entries),
        "arc_root": arc_root,
        "source_root": os.path.abspath(root),
        "recorded_at": time.time(),
        "checksum": None,
        "noise": [],
        "exclude": [],
    }
    meta["identity"] = identity(entries, promises=index.meta_promises(meta))
    values = {k: json.dumps(v) if isinstance(v, list) else v for k, v in meta.items()}
    rows = [Row.of(e) for e in entries]
    blocks = index.row_blocks(rows)
    with sqlite3.connect(os.fspath(index_path)) as conn:
        conn.executescript(index.SCHEMA)
        conn.executemany(index.INSERT_META, list(values.items()))
        conn.executemany(index.INSERT_ENTRY, rows)
        conn.executemany(index.INSERT_BLOCK, ((n, *block) for n, block in enumerate(blocks)))
    conn.close()
