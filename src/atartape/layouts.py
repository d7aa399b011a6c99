"""Layouts kept in a tape's index, and downloaded volumes checked against them.

A layout (:class:`~atartape.Layout`) names one way of cutting a tape into volumes: its tag, its
volume size, the volumes' names and, once a volume has been produced from its first byte to its
last, the MD5 of its bytes (which an object store reports as the ETag of a single-part upload).
Registering one writes it into the index, in tables of their own (``layouts`` and ``volumes``)
that are no part of the recording: the tape's identity, and its bytes, stay as they were.

Writes take a short read-write connection (a worker thread's, through
:mod:`atartape._engine.store`) that first checks, inside its transaction, that the index still
holds the recording the caller planned with; readers keep reading meanwhile. A tartape 3
catalog's layouts and checksums are read, never written.

Which layout a value means (:func:`find_layout`): a :class:`Layout` is itself; a string that is a
registered tag is that layout; otherwise the value is a size, and the registered layout of that
size is meant (the default one first), or else a virtual layout of that size (the same volumes,
nothing kept). A size written in one unit family that matches no layout while the other reading
matches one (``"64KB"``, 64 000 bytes, beside a layout of 64 KiB volumes) is refused with
:class:`AmbiguousLayoutError`, naming the layout: tags are how layouts are meant.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from datetime import datetime, timezone
from typing import Protocol

import anyio
import anyio.to_thread

from ._engine.index import FORMAT, Index, open_index
from ._engine.store import IndexStore, open_store
from ._engine.tartape_catalog import TartapeCatalog
from .errors import (
    AmbiguousLayoutError,
    InvalidArgumentError,
    LayoutNotFoundError,
    ReadOnlyIndexError,
    TapeChangedError,
    TapeFormatError,
    TarTapeError,
    VolumeNotFoundError,
)
from .format.units import parse_size
from .format.windows import Checksum, Layout

__all__ = [
    "LayoutBook",
    "TapeFacts",
    "default_layout",
    "find_layout",
    "read_layouts",
    "register_layout",
    "store_checksum",
    "tagged_layout",
    "tape_name",
    "verify_volume",
]

VOLUME_CHECKSUM = "md5"
"""The algorithm of the checksums atartape stores for volumes (an object store's ETag)."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS layouts (
        tag TEXT PRIMARY KEY,
        volume_size INTEGER NOT NULL,
        name_template TEXT NOT NULL,
        is_default INTEGER NOT NULL,
        created_at REAL NOT NULL,
        identity TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS volumes (
        tag TEXT NOT NULL,
        volume_index INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        checksum TEXT NOT NULL,
        PRIMARY KEY (tag, volume_index)
    ) WITHOUT ROWID""",
)
"""The layouts of the recording ``identity`` and the checksums known of their volumes."""

_HASH_HOP = 16 * 1024 * 1024  # bytes hashed per worker-thread hop
_READ_SIZE = 1024 * 1024


class TapeFacts(Protocol):
    """What layouts need to know of a tape (a :class:`~atartape.Tape` has it all)."""

    @property
    def index_path(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def total_size(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def recorded_at(self) -> datetime: ...


def tape_name(arc_root: str) -> str:
    """A tape's name: the last component of its root entry (``dataset``)."""
    return arc_root.rsplit("/", 1)[-1] or "tape"


# ------------------------------------------------------------------------ which layout


class LayoutBook:
    """The layouts a :class:`~atartape.Tape` knows: read when it was opened, plus those
    registered, and the checksums stored, through it since."""

    def __init__(self) -> None:
        self._by_tag: dict[str, Layout] = {}

    def reset(self, layouts: Iterable[Layout]) -> None:
        self._by_tag = {layout.tag: layout for layout in layouts}

    def put(self, layout: Layout) -> None:
        if layout.is_default:
            self._by_tag = {tag: _without_default(known) for tag, known in self._by_tag.items()}
        self._by_tag[layout.tag] = layout

    def note_checksum(self, layout: Layout, index: int, algorithm: str, hexdigest: str) -> None:
        known = self._by_tag.get(layout.tag)
        if known is not None and known.volume_size == layout.volume_size:
            self._by_tag[layout.tag] = known.with_checksum(index, algorithm, hexdigest)

    @property
    def layouts(self) -> tuple[Layout, ...]:
        """The layouts, oldest first."""
        return tuple(sorted(self._by_tag.values(), key=_age))


def _age(layout: Layout) -> tuple[float, str]:
    return (layout.created_at.timestamp() if layout.created_at else 0.0), layout.tag


def _without_default(layout: Layout) -> Layout:
    return replace(layout, is_default=False) if layout.is_default else layout


_DECIMAL = re.compile(r"(?i)^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kmgtp])b\s*$")
_BINARY = re.compile(r"(?i)^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kmgtp])ib\s*$")


def _other_reading(spec: str) -> int | None:
    """The size ``spec`` would be in the other unit family (``"64KB"`` -> 65536)."""
    for pattern, suffix in ((_DECIMAL, "iB"), (_BINARY, "B")):
        match = pattern.match(spec)
        if match:
            try:
                return parse_size(match.group(1) + match.group(2) + suffix)
            except ValueError:
                return None
    return None


def find_layout(
    layouts: Sequence[Layout],
    spec: Layout | int | str,
    *,
    total_size: int,
    name: str,
    fingerprint: str = "",
) -> Layout:
    """The layout ``spec`` means among a tape's ``layouts`` (see the module docstring).

    ``total_size``, ``name`` and ``fingerprint`` describe the tape, for a virtual layout.
    Raises :class:`LayoutNotFoundError` for a string that is neither a tag nor a size,
    :class:`AmbiguousLayoutError` for a size that reads as a registered layout's only in the
    other unit family, :class:`ValueError` for a bad size or another tape's layout.
    """
    if isinstance(spec, Layout):
        if spec.total_size != total_size:
            raise InvalidArgumentError(
                f"the layout {spec.tag!r} cuts a tape of {spec.total_size} bytes; "
                f"this one has {total_size}"
            )
        return spec
    if isinstance(spec, str):
        for layout in layouts:
            if layout.tag == spec:
                return layout
        if not spec.strip()[:1].isdigit():
            raise LayoutNotFoundError(_unknown_tag(spec, layouts))
    try:
        size = parse_size(spec, what="volume size")
    except ValueError as exc:
        if not layouts or not isinstance(spec, str):
            raise
        raise InvalidArgumentError(
            f"{exc} (nor is it a layout tag: {_unknown_tag(spec, layouts)})"
        ) from None
    same = [layout for layout in layouts if layout.volume_size == size]
    if same:
        return next((layout for layout in same if layout.is_default), same[0])
    if isinstance(spec, str):
        other = _other_reading(spec)
        matching = [layout for layout in layouts if layout.volume_size == other]
        if matching:
            raise AmbiguousLayoutError(
                f"{spec!r} is {size} bytes here (KB, MB, GB... are powers of 1000, KiB, MiB, "
                f"GiB... powers of 1024), and no layout of this tape has volumes of that size; "
                f"its layout {matching[0].tag!r} has volumes of {other} bytes. Pass that tag "
                f"to mean it, or the int {size} to mean {size}-byte volumes"
            )
    return Layout.plan(total_size, size, tape_name=name, fingerprint=fingerprint)


def tagged_layout(layouts: Sequence[Layout], spec: Layout | str, *, total_size: int) -> Layout:
    """The registered layout tagged ``spec`` (a :class:`Layout` is itself), never a size.

    Raises :class:`LayoutNotFoundError` when the tape has no layout of that tag.
    """
    if isinstance(spec, Layout):
        return find_layout(layouts, spec, total_size=total_size, name="")
    for layout in layouts:
        if layout.tag == spec:
            return layout
    raise LayoutNotFoundError(_unknown_tag(spec, layouts))


def _unknown_tag(spec: object, layouts: Sequence[Layout]) -> str:
    tags = ", ".join(repr(layout.tag) for layout in layouts) or "none"
    return (
        f"this tape has no layout tagged {spec!r} (its layouts: {tags}; one registered "
        "elsewhere since the tape was opened is seen after `await tape.reload_layouts()`)"
    )


def default_layout(
    layouts: Sequence[Layout], *, total_size: int, name: str, fingerprint: str = ""
) -> Layout:
    """The layout meant when none is named: the only one, or the default one; a virtual
    layout of one volume (tag ``"monolithic"``) when there is none.

    Raises :class:`AmbiguousLayoutError` when there are several and none is the default.
    """
    if not layouts:
        return Layout.plan(
            total_size,
            max(total_size, 1),
            tape_name=name,
            tag="monolithic",
            fingerprint=fingerprint,
        )
    if len(layouts) == 1:
        return layouts[0]
    for layout in layouts:
        if layout.is_default:
            return layout
    tags = ", ".join(repr(layout.tag) for layout in layouts)
    raise AmbiguousLayoutError(
        f"this tape has several layouts ({tags}) and none is the default: name one "
        "(tape.get_layout(tag)), or register one with is_default=True"
    )


# ------------------------------------------------------------------------ reading


async def read_layouts(index: Index) -> list[Layout]:
    """The layouts the opened ``index`` keeps for its recording, oldest first."""
    if isinstance(index, TartapeCatalog):
        return await index.read_layouts()
    store = index.store
    tables = await store.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('layouts', 'volumes')"
    )
    if len(tables) < 2:
        return []
    meta = index.meta
    found = await store.fetchall(
        "SELECT tag, volume_size, name_template, is_default, created_at FROM layouts "
        "WHERE identity = ? ORDER BY created_at, tag",
        (index.identity,),
    )
    checksums: dict[str, list[Checksum]] = {}
    for tag, volume_index, algorithm, checksum in await store.fetchall(
        "SELECT tag, volume_index, algorithm, checksum FROM volumes"
    ):
        known = (int(volume_index), str(algorithm), str(checksum))
        checksums.setdefault(str(tag), []).append(known)
    layouts = []
    for tag, size, template, is_default, created in found:
        try:
            layout = Layout.plan(
                meta["total_size"],
                int(size),
                tape_name=tape_name(meta["arc_root"]),
                tag=str(tag),
                name_template=str(template),
                fingerprint=meta["fingerprint"],
                is_default=bool(is_default),
                registered=True,
                created_at=datetime.fromtimestamp(float(created), tz=timezone.utc),
            )
        except (TypeError, ValueError, OverflowError):
            raise TapeFormatError(
                f"the index {index.where} is damaged: its layout {tag!r} has bad values"
            ) from None
        count = layout.count
        kept = tuple(c for c in checksums.get(layout.tag, []) if 0 <= c[0] < count)
        layouts.append(replace(layout, checksums=kept))
    return layouts


# ------------------------------------------------------------------------ writing


@asynccontextmanager
async def _writing(tape: TapeFacts, what: str) -> AsyncIterator[IndexStore]:
    """A write transaction on ``tape``'s index, once it is known to hold that recording.

    Raises :class:`ReadOnlyIndexError` when the index cannot be written (or is a tartape 3
    catalog) and :class:`TapeChangedError` when it holds another recording; nothing is
    written then.
    """
    where = tape.index_path
    try:
        store = await open_store(where, must_exist=True)
    except PermissionError as exc:
        raise _read_only(where, what, exc) from None
    try:
        try:
            await store.execute("BEGIN IMMEDIATE")
        except PermissionError as exc:
            raise _read_only(where, what, exc) from None
        try:
            await _require_recording(store, tape)
            for statement in SCHEMA:
                await store.execute(statement)
            yield store
            await store.execute("COMMIT")
        except PermissionError as exc:
            await _rollback(store)
            raise _read_only(where, what, exc) from None
        except BaseException:
            await _rollback(store)
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await store.aclose()


async def _rollback(store: IndexStore) -> None:
    with anyio.CancelScope(shield=True):
        # Nothing may have been begun, or it is gone with the connection.
        with suppress(TarTapeError, OSError):
            await store.execute("ROLLBACK")


def _read_only(where: str, what: str, exc: OSError) -> ReadOnlyIndexError:
    reason = os.strerror(exc.errno) if exc.errno else "read-only"
    return ReadOnlyIndexError(
        exc.errno,
        f"cannot write {what} into the tape index: it is read-only here ({reason}); "
        "an index on a read-only disk can be copied somewhere writable and opened there",
        where,
    )


async def _require_recording(store: IndexStore, tape: TapeFacts) -> None:
    tables = {
        name
        for (name,) in await store.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'track')"
        )
    }
    if "meta" not in tables:
        raise ReadOnlyIndexError(
            f"{tape.index_path} is a tartape 3 catalog: atartape reads it but never writes it "
            "(record the folder with atartape to keep layouts of your own)"
        )
    meta: dict[str, object] = dict(
        await store.fetchall(
            "SELECT key, value FROM meta WHERE key IN "
            "('format', 'identity', 'fingerprint', 'recorded_at')"
        )
    )
    if meta.get("format") != FORMAT:
        raise TapeFormatError(f"{tape.index_path} is not a tape index (no format marker)")
    if "identity" in meta:
        same = meta["identity"] == tape.identity
    else:  # version 1: its identity is computed; its fingerprint and moment tell it apart
        recorded = meta.get("recorded_at")
        moment = datetime.fromtimestamp(
            float(recorded) if isinstance(recorded, (int, float)) else 0.0, tz=timezone.utc
        )
        same = meta.get("fingerprint") == tape.fingerprint and moment == tape.recorded_at
    if not same:
        raise TapeChangedError(
            f"the index {tape.index_path} was re-recorded: it holds another recording than "
            f"{tape.identity[:16]}... (open the tape again)"
        )


async def register_layout(
    tape: TapeFacts,
    volume_size: int | str,
    *,
    tag: str | None = None,
    is_default: bool = False,
    name_template: str | None = None,
) -> Layout:
    """Write a layout of ``tape`` into its index and return it (see
    :meth:`Tape.register_layout <atartape.Tape.register_layout>`)."""
    layout = Layout.plan(
        tape.total_size,
        volume_size,
        tape_name=tape.name,
        tag=tag,
        name_template=name_template,
        fingerprint=tape.fingerprint,
        is_default=bool(is_default),
        registered=True,
        created_at=datetime.fromtimestamp(time.time(), tz=timezone.utc),
    )
    async with _writing(tape, f"the layout {layout.tag!r}") as store:
        before = await store.fetchone(
            "SELECT volume_size, name_template, created_at FROM layouts "
            "WHERE tag = ? AND identity = ?",
            (layout.tag, tape.identity),
        )
        if before is not None and (before[0], before[1]) == (
            layout.volume_size,
            layout.name_template,
        ):
            # The same volumes: what is known of them still holds.
            layout = replace(
                layout,
                checksums=await _stored_checksums(store, layout),
                created_at=datetime.fromtimestamp(float(before[2]), tz=timezone.utc),
            )
        else:
            await store.execute("DELETE FROM volumes WHERE tag = ?", (layout.tag,))
        if layout.is_default:
            await store.execute("UPDATE layouts SET is_default = 0")
        created = layout.created_at.timestamp() if layout.created_at else time.time()
        await store.execute(
            "INSERT OR REPLACE INTO layouts "
            "(tag, volume_size, name_template, is_default, created_at, identity) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                layout.tag,
                layout.volume_size,
                layout.name_template,
                int(layout.is_default),
                created,
                tape.identity,
            ),
        )
    return layout


async def _stored_checksums(store: IndexStore, layout: Layout) -> tuple[Checksum, ...]:
    count = layout.count
    found = await store.fetchall(
        "SELECT volume_index, algorithm, checksum FROM volumes WHERE tag = ?", (layout.tag,)
    )
    return tuple(
        (int(index), str(algorithm), str(checksum))
        for index, algorithm, checksum in found
        if 0 <= int(index) < count
    )


async def store_checksum(
    tape: TapeFacts, layout: Layout, volume_index: int, algorithm: str, hexdigest: str
) -> bool:
    """Keep the checksum of a volume of a registered layout in ``tape``'s index.

    Returns whether it was kept: not when the index cannot be written, holds another
    recording, or no longer has that layout with that volume size (the volume's bytes are
    right all the same: only the record of them is missing). Never raises but cancellation.
    """
    if layout.is_virtual:
        return False
    try:
        async with _writing(tape, "a volume checksum") as store:
            found = await store.fetchone(
                "SELECT volume_size FROM layouts WHERE tag = ? AND identity = ?",
                (layout.tag, tape.identity),
            )
            if found is None or found[0] != layout.volume_size:
                return False
            await store.execute(
                "INSERT OR REPLACE INTO volumes (tag, volume_index, algorithm, checksum) "
                "VALUES (?, ?, ?, ?)",
                (layout.tag, volume_index, algorithm, hexdigest),
            )
    except (TarTapeError, OSError):
        return False
    return True


# ------------------------------------------------------------------------ verify_volume


async def verify_volume(
    index_or_tape: TapeFacts | str | os.PathLike[str],
    downloaded_file: str | os.PathLike[str],
    volume_index: int | None = None,
    *,
    tag: Layout | str | int | None = None,
) -> bool:
    """Whether ``downloaded_file`` holds exactly volume ``volume_index`` of a layout, by the
    checksum stored for that volume when it was produced.

    ``index_or_tape`` is a :class:`~atartape.Tape` (its recording is pinned) or the path of an
    index (an atartape index or a tartape 3 catalog). ``tag`` names the layout (a tag, a
    :class:`Layout` or a size, see :meth:`Tape.get_layout <atartape.Tape.get_layout>`; by
    default the tape's default layout). Without ``volume_index`` the volume is the one named
    like the file. The index is read afresh, so checksums stored by other processes count.

    Returns ``False`` when the file is missing or not a regular file, when no checksum was
    stored for that volume (none is, for a virtual layout), or when its size or digest
    differs; ``True`` only when the digest matches. Raises :class:`VolumeNotFoundError` for an
    index outside the layout, or a file named like none of its volumes; what
    :meth:`Tape.get_layout <atartape.Tape.get_layout>` raises for ``tag``;
    :class:`TapeChangedError` when the index holds another recording than the tape given.
    """
    if isinstance(index_or_tape, (str, os.PathLike)):
        where = await anyio.to_thread.run_sync(os.path.abspath, os.fspath(index_or_tape))
        expected = None
    else:
        where, expected = index_or_tape.index_path, index_or_tape.identity
    async with await open_index(where, expected=expected, shared=True) as index:
        layouts = await read_layouts(index)
        meta = index.meta
    facts = {
        "total_size": meta["total_size"],
        "name": tape_name(meta["arc_root"]),
        "fingerprint": meta["fingerprint"],
    }
    if tag is None:
        layout = default_layout(layouts, **facts)
    else:
        spec = tag.tag if isinstance(tag, Layout) and tag.registered else tag
        layout = find_layout(layouts, spec, **facts)
    path = os.fspath(downloaded_file)
    if volume_index is None:
        found = layout.index_of(os.path.basename(path))
        if found is None:
            raise VolumeNotFoundError(
                f"{os.path.basename(path)!r} is named like no volume of the layout "
                f"{layout.tag!r} (pass volume_index=)"
            )
        volume_index = found
    volume = layout.volume(volume_index)
    size = await anyio.to_thread.run_sync(_regular_file_size, path)
    if size is None or volume.checksum is None or size != volume.size:
        return False
    digest = await _hash_file(path, volume.checksum_algorithm or "sha256")
    return digest == volume.checksum.lower()


def _regular_file_size(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


async def _hash_file(path: str, algorithm: str) -> str:
    """The hex digest of a file, hashed in worker-thread hops of a bounded size."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    handle = await anyio.to_thread.run_sync(lambda: open(path, "rb"))  # noqa: SIM115

    def hop() -> bool:
        left = _HASH_HOP
        while left > 0:
            block = handle.read(min(_READ_SIZE, left))
            if not block:
                return False
            digest.update(block)
            left -= len(block)
        return True

    try:
        while await anyio.to_thread.run_sync(hop):
            pass
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(handle.close)
    return digest.hexdigest()
