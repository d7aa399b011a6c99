"""The digests of a part: its MD5 (what an S3 ETag is, and ``Content-MD5``) and, when asked for,
its flexible checksum (CRC32C or SHA-256, as S3 wants it: big-endian bytes in base64).

CRC32C comes from ``awscrt`` (extra ``s3``; AWS's common runtime, also what ``botocore[crt]``
uses), or from the ``crc32c`` package when that is what is installed; it is imported only when a
CRC32C is asked for.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from typing import Any

from .._extras import require
from .errors import S3PlanError

__all__ = ["Checksum", "PartDigest", "new_checksum"]


@functools.lru_cache(maxsize=1)
def _crc32c_function() -> Callable[[bytes, int], int]:
    try:
        from awscrt import checksums  # type: ignore[import-untyped, import-not-found, unused-ignore]

        crt: Any = checksums.crc32c
        return lambda data, value: int(crt(data, value))
    except ImportError:
        pass
    try:
        import crc32c  # type: ignore[import-not-found, unused-ignore]

        fn: Any = crc32c.crc32c
        return lambda data, value: int(fn(data, value))
    except ImportError:
        pass
    require("awscrt.checksums", "s3", "the crc32c checksum", hint="or the crc32c package")
    raise AssertionError("unreachable: awscrt was imported above")  # pragma: no cover


class Checksum:
    """A running CRC32C or SHA-256 of a part; :meth:`b64` gives it as S3 writes it."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        if algorithm == "crc32c":
            self._crc = _crc32c_function()
            self._value = 0
        elif algorithm == "sha256":
            self._sha = hashlib.sha256()
        else:
            raise S3PlanError(f"unknown checksum {algorithm!r}: use crc32c or sha256 (or md5)")

    def update(self, data: bytes | memoryview) -> None:
        if self.algorithm == "crc32c":
            self._value = self._crc(
                bytes(data) if isinstance(data, memoryview) else data, self._value
            )
        else:
            self._sha.update(data)

    def digest(self) -> bytes:
        if self.algorithm == "crc32c":
            return self._value.to_bytes(4, "big")
        return self._sha.digest()

    def b64(self) -> str:
        return base64.b64encode(self.digest()).decode()


def new_checksum(algorithm: str) -> Checksum:
    """A :class:`Checksum` for ``crc32c`` or ``sha256``; :class:`~atartape.s3.S3PlanError`
    for another name, or for ``crc32c`` when no implementation is installed."""
    return Checksum(algorithm)


class PartDigest:
    """The MD5 of a part and, for ``checksum`` ``crc32c``/``sha256``, that checksum too."""

    def __init__(self, checksum: str) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._extra = new_checksum(checksum) if checksum != "md5" else None
        self.size = 0

    def update(self, data: bytes) -> None:
        self._md5.update(data)
        if self._extra is not None:
            self._extra.update(data)
        self.size += len(data)

    @property
    def md5(self) -> str:
        """Hex MD5 (an S3 ETag without its quotes)."""
        return self._md5.hexdigest()

    @property
    def content_md5(self) -> str:
        """Base64 MD5, for the ``Content-MD5`` header."""
        return base64.b64encode(self._md5.digest()).decode()

    @property
    def checksum(self) -> str | None:
        """The flexible checksum in base64, or ``None`` for ``md5``."""
        return self._extra.b64() if self._extra is not None else None
