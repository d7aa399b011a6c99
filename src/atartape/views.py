"""Views of a tape: the tar itself, compressed (seekable zstd), sealed (age), or both.

A view is a pure, deterministic transform of the tape's bytes whose every offset is known when
the tape is recorded, so volumes, ranges, resume and locate work on it by arithmetic, as on the
tar itself:

- ``"zstd"``: the Zstandard seekable format (frames of a fixed plain size, a seek table at the
  end; ``zstd -d``, ``tar --zstd`` and ``pyzstd.SeekableZstdFile`` read it). Each frame is
  compressed once when the tape is recorded, to learn its size and tag; a frame is compressed
  again when it is played and sent only if it is the very frame recorded. Another zstd build
  that compresses differently is refused (:class:`~atartape.ViewError`), never sent.
- ``"age"``: the age v1 format (``age -d``, rage, pyrage read it), sealed for the recipients
  named when recording. Its header, made once, is kept in the index; the file key is kept in a
  file of its own beside the index (``<index>.key``, mode 0600), never in the index. A chunk is
  sealed again in memory with the other chunks of its 1 MiB block, and sent only when their
  tags give the digest recorded for that block: a nonce is never used in the open with other
  plaintext.
- ``"zstd+age"``: the compressed view, sealed.

The recording identity covers the views; each view has an identity of its own (its ETag).
Sizes leak: the sealed size gives the tar's size, and a compressed view's frame sizes give how
well each part compresses. Names and contents are inside the seal.

This module describes the views (their names, sizes and identities, read from a tape's meta);
:mod:`atartape.transforms` makes and replays their bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArgumentError

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "VIEWS",
    "available",
    "content_type",
    "identity_of",
    "key_path",
    "recorded_view",
    "size_of",
    "suffix",
]

VIEWS = ("plain", "zstd", "age", "zstd+age")
_SUFFIXES = {"plain": ".tar", "zstd": ".tar.zst", "age": ".tar.age", "zstd+age": ".tar.zst.age"}
_TYPES = {
    "plain": "application/x-tar",
    "zstd": "application/zstd",
    "age": "application/octet-stream",
    "zstd+age": "application/octet-stream",
}
DEFAULT_FRAME_SIZE = 4 * 1024 * 1024


def suffix(view: str) -> str:
    """The file name suffix of a view: ``.tar``, ``.tar.zst``, ``.tar.age``, ``.tar.zst.age``."""
    return _SUFFIXES[view]


def content_type(view: str) -> str:
    """The media type a view is served with."""
    return _TYPES[view]


def key_path(index_path: str) -> str:
    """Where the file key of a sealed tape is kept: beside its index, never in it."""
    return index_path + ".key"


def recorded_view(meta: Mapping[str, Any]) -> str:
    """The view a tape was recorded with: the one it is played and served as by default."""
    views = meta.get("views") or {}
    if "age" in views:
        return "zstd+age" if views["age"].get("over") == "zstd" else "age"
    return "zstd" if "zstd" in views else "plain"


def available(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The views a tape can be played as (the tar, and what it was recorded with)."""
    views = meta.get("views") or {}
    found = ["plain"]
    if "zstd" in views:
        found.append("zstd")
    if "age" in views:
        found.append("zstd+age" if views["age"].get("over") == "zstd" else "age")
    return tuple(found)


def size_of(meta: Mapping[str, Any], view: str) -> int:
    """How many bytes ``view`` of the tape has; ``ValueError`` for a view it lacks."""
    if view not in available(meta):
        raise InvalidArgumentError(
            f"the tape has no {view!r} view (it has {', '.join(available(meta))}): record it "
            "with compress='zstd' and/or seal= to make one"
        )
    views = meta.get("views") or {}
    if view == "plain":
        total: int = meta["total_size"]
        return total
    if view == "zstd":
        return int(views["zstd"]["size"])
    return int(views["age"]["size"])


def identity_of(identity: str, view: str) -> str:
    """The identity (strong validator) of a view of the recording ``identity``: that identity
    itself for the tar."""
    if view == "plain":
        return identity
    return hashlib.sha256(f"{identity}:{view}".encode()).hexdigest()
