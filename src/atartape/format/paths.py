"""Archive path rules: what a path in a tape may look like, and how it fits a USTAR header.

Pure functions, no I/O. Paths are handled as bytes (UTF-8 with ``surrogateescape``), so a file
name that is not valid UTF-8 keeps its exact bytes, and the order of entries never depends on
locale. A tape never carries PAX or GNU long-name records (they would make the layout depend on
content), so every path must fit the 100-byte name field plus the 155-byte prefix field.
"""

from __future__ import annotations

import hashlib

from ..errors import InvalidArgumentError

__all__ = [
    "MAX_COMPONENT",
    "MAX_LINKNAME",
    "MAX_PATH",
    "NAME_FIELD",
    "PREFIX_FIELD",
    "from_bytes",
    "header_name",
    "join",
    "relative_to_root",
    "shorten",
    "sort_key",
    "split_ustar",
    "to_bytes",
    "unsafe",
    "violation",
]

NAME_FIELD = 100
PREFIX_FIELD = 155
MAX_PATH = 255  # NAME_FIELD + PREFIX_FIELD: the longest path a plain USTAR header carries
MAX_COMPONENT = 100
MAX_LINKNAME = 100


def to_bytes(path: str) -> bytes:
    """The exact bytes of ``path`` (UTF-8; undecodable bytes come back via surrogateescape)."""
    return path.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    """The inverse of :func:`to_bytes`: never fails, whatever the bytes."""
    return raw.decode("utf-8", "surrogateescape")


def sort_key(raw: bytes) -> list[bytes]:
    """The key that orders entries in a tape: the path's components, compared as bytes.

    Comparing component by component keeps each folder's contents right after it, together
    (``a_test/``, ``a_test/empty``, then ``a_test.py``), which plain byte order does not
    (``.`` sorts before ``/``), and it never depends on the locale.
    """
    return raw.split(b"/")


def split_ustar(raw: bytes) -> tuple[bytes, bytes] | None:
    """Split a path into the USTAR ``(prefix, name)`` fields, or ``None`` if it cannot fit.

    A path of at most 100 bytes goes whole into the name field. A longer one is cut at the last
    ``/`` that leaves at most 155 bytes of prefix and at most 100 bytes of (non-empty) name.
    """
    if len(raw) <= NAME_FIELD:
        return b"", raw
    if len(raw) > MAX_PATH + 1:  # +1: the slash at the cut is not stored
        return None
    cut = raw.rfind(b"/", 0, PREFIX_FIELD + 1)
    if cut <= 0:
        return None
    name = raw[cut + 1 :]
    if not name or len(name) > NAME_FIELD:
        return None  # a cut further left would only make the name longer
    return raw[:cut], name


def header_name(raw: bytes, *, is_dir: bool) -> tuple[bytes, bytes] | None:
    """The ``(prefix, name)`` a header stores for an entry, or ``None`` if it cannot fit.

    Directories carry a trailing slash, as tar and tarfile write them, when the slashed form fits;
    otherwise the bare form (the type flag alone says "directory" to every reader).
    """
    if is_dir:
        slashed = split_ustar(raw + b"/")
        if slashed is not None:
            return slashed
    return split_ustar(raw)


def violation(path: str, *, is_dir: bool = False, linkname: str | None = None) -> str | None:
    """Why ``path`` cannot be stored in a tape, or ``None`` when it can.

    The rules: a relative path with no empty, ``.`` or ``..`` component; at most 255 bytes; no
    component over 100 bytes; a USTAR prefix/name split must exist; a symlink target fits the
    100-byte link field.
    """
    raw = to_bytes(path)
    if not raw:
        return "empty path"
    if raw.startswith(b"/"):
        return "absolute path"
    if b"\0" in raw:
        return "NUL byte in path"
    parts = raw.split(b"/")
    if any(part in (b"", b".", b"..") for part in parts):
        return "empty, '.' or '..' component"
    if len(raw) > MAX_PATH:
        return f"path is {len(raw)} bytes (max {MAX_PATH})"
    longest = max(parts, key=len)
    if len(longest) > MAX_COMPONENT:
        return (
            f"component {from_bytes(longest)[:20]!r}... is {len(longest)} bytes "
            f"(max {MAX_COMPONENT})"
        )
    if header_name(raw, is_dir=is_dir) is None:
        return "no '/' splits the path into a 155-byte prefix and a 100-byte name"
    if linkname is not None:
        link = to_bytes(linkname)
        if len(link) > MAX_LINKNAME:
            return f"symlink target is {len(link)} bytes (max {MAX_LINKNAME})"
        if b"\0" in link:
            return "NUL byte in symlink target"
    return None


def _short_component(part: bytes, limit: int, attempt: int) -> bytes:
    """``part`` if it fits ``limit`` bytes, else its start, ``_`` and 14 hex of its digest."""
    if len(part) <= limit:
        return part
    tag = hashlib.sha256(part + b"\0" * attempt).hexdigest()[:14].encode()
    cut = limit - len(tag) - 1
    while cut > 0 and part[cut] & 0xC0 == 0x80:  # never split a UTF-8 character
        cut -= 1
    return part[:cut] + b"_" + tag


def shorten(raw: bytes, *, is_dir: bool = False, attempt: int = 0) -> bytes:
    """A path that fits a USTAR header, made from ``raw`` deterministically (``auto_truncate``).

    First every component over 100 bytes (99 for a folder's own name, which gets a slash) keeps
    its start and gets ``_`` and 14 hex of its SHA-256. If the path still does not fit, it keeps
    its first component (the tape's root) and its last (the name), inserts ``~`` and 16 hex of
    the SHA-256 of the whole original folder path, and as many of the nearest folders as fit.
    The same path always gives the same result; ``attempt`` (1, 2...) gives another one, for
    the rare name that collides with another entry's. Raises ``ValueError`` when even that
    cannot fit (a root or a name that cannot be shortened enough).
    """
    parts = raw.split(b"/")
    last = len(parts) - 1
    parts = [
        _short_component(part, MAX_COMPONENT - (1 if is_dir and i == last else 0), attempt)
        for i, part in enumerate(parts)
    ]
    candidate = b"/".join(parts)
    if len(candidate) <= MAX_PATH and header_name(candidate, is_dir=is_dir) is not None:
        return candidate
    if len(parts) < 2:
        raise InvalidArgumentError(f"{raw!r} cannot be shortened to fit a USTAR header")
    root, middle, leaf = parts[0], parts[1:-1], parts[-1]
    folder = raw.rsplit(b"/", 1)[0]
    marker = b"~" + hashlib.sha256(folder + b"\0" * attempt).hexdigest()[:16].encode()
    kept: list[bytes] = []
    best = b"/".join((root, marker, leaf))
    for part in reversed(middle):
        trial = b"/".join((root, marker, part, *kept, leaf))
        if len(trial) > MAX_PATH or header_name(trial, is_dir=is_dir) is None:
            break
        kept.insert(0, part)
        best = trial
    if header_name(best, is_dir=is_dir) is None:
        raise InvalidArgumentError(f"{raw!r} cannot be shortened to fit a USTAR header")
    return best


def join(*parts: str) -> str:
    """Join archive path components with ``/`` (never the OS separator)."""
    return "/".join(part for part in parts if part)


def relative_to_root(arc_path: str, arc_root: str) -> str:
    """The path of an entry inside the recorded folder: ``arc_path`` without ``arc_root``.

    The root entry itself maps to ``""``. Raises ``ValueError`` for a path outside the root.
    """
    if arc_path == arc_root:
        return ""
    if not arc_root:
        return arc_path
    prefix = arc_root + "/"
    if not arc_path.startswith(prefix):
        raise InvalidArgumentError(f"{arc_path!r} is not inside {arc_root!r}")
    return arc_path[len(prefix) :]


def unsafe(raw: bytes) -> str | None:
    """Why ``raw``, read from outside (an index), cannot name a path beneath a folder, or
    ``None``: an absolute path, a NUL byte, an empty, ``.`` or ``..`` component.

    The empty path itself is refused too; a caller for which it means the folder checks that
    first. Lengths are not checked: what a header can carry is the recorder's rule.
    """
    if not raw:
        return "empty path"
    if raw.startswith(b"/"):
        return "absolute path"
    if b"\0" in raw:
        return "NUL byte"
    if b"/." not in raw and b"//" not in raw and raw[0] != 0x2E and raw[-1] != 0x2F:
        return None  # the common case, decided without splitting: no component can be bad
    if any(part in (b"", b".", b"..") for part in raw.split(b"/")):
        return "empty, '.' or '..' component"
    return None
