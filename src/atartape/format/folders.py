"""Which names of a folder a tape holds: exclusion patterns, OS noise, and the listing digest.

Pure functions, no I/O. A tape promises, for every folder, the names it held when it was
recorded (less the excluded ones and the OS noise): their :func:`listing_digest` is stored in the
index. When a folder's mtime has moved, the player lists it again and compares digests, so that a
``.DS_Store`` that Finder wrote meanwhile changes nothing, while any other name added, removed or
renamed stops the play (no byte of the tape depends on noise; every other name might).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "DEFAULT_NOISE",
    "Exclude",
    "Selection",
    "listing_digest",
]

DEFAULT_NOISE = (".DS_Store", "Thumbs.db", "desktop.ini", "._*")
"""Names operating systems write into folders on their own (Finder, Explorer, AppleDouble)."""

Exclude = Iterable[str] | Callable[[str], bool] | None
"""What ``record(..., exclude=...)`` takes: glob patterns (a name or a relative path), or a
predicate on the relative path."""


class Selection:
    """Which names of the recorded folder a tape holds.

    ``patterns`` (globs) match an entry's name (``*.tmp``, ``.git``) or its path relative to the
    recorded folder (``logs/*.gz``); ``predicate`` receives the relative path; ``noise`` lists
    the names (globs) operating systems add on their own, left out and tolerated.
    """

    def __init__(
        self,
        *,
        patterns: Sequence[str] = (),
        predicate: Callable[[str], bool] | None = None,
        noise: Sequence[str] = DEFAULT_NOISE,
    ) -> None:
        self.patterns = tuple(p.rstrip("/") for p in patterns)
        self.predicate = predicate
        self.noise = tuple(noise)

    @classmethod
    def of(cls, exclude: Exclude, noise: Sequence[str] = DEFAULT_NOISE) -> Selection:
        """The selection for ``record``'s ``exclude`` and ``noise`` arguments.

        Raises ``TypeError`` for an ``exclude`` that is neither patterns nor a callable.
        """
        if exclude is None:
            return cls(noise=noise)
        if callable(exclude):
            return cls(predicate=exclude, noise=noise)
        if isinstance(exclude, (str, bytes)):
            exclude = [exclude] if isinstance(exclude, str) else [exclude.decode()]
        patterns = list(exclude)
        if not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"exclude must be glob patterns (str) or a callable, not {exclude!r}")
        return cls(patterns=patterns, noise=noise)

    def is_noise(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.noise)

    def matches_patterns(self, rel: str, name: str) -> bool:
        return any(
            fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(rel, p) for p in self.patterns
        )

    def excluded(self, rel: str, name: str) -> bool:
        """Whether the entry at ``rel`` (relative to the recorded folder) is left out."""
        if self.is_noise(name) or self.matches_patterns(rel, name):
            return True
        return self.predicate is not None and bool(self.predicate(rel))

    def listed(self, rel_folder: str, name: str) -> bool:
        """Whether ``name`` in the folder ``rel_folder`` counts in its listing digest: every
        name but the noise and the pattern matches (a predicate cannot be asked again when the
        tape plays, so what it left out still counts)."""
        rel = f"{rel_folder}/{name}" if rel_folder else name
        return not (self.is_noise(name) or self.matches_patterns(rel, name))


def listing_digest(names: Iterable[bytes]) -> str:
    """The digest of a folder's names (raw bytes), in any order: SHA-256 of the sorted names."""
    digest = hashlib.sha256(b"atartape-listing-1\0")
    for name in sorted(names):
        digest.update(name)
        digest.update(b"\0")
    return digest.hexdigest()[:32]
