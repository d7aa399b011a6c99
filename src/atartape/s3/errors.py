"""The errors of :mod:`atartape.s3`, under :class:`~atartape.TarTapeError`::

TarTapeError
└── S3Error                                  a request to the store failed (``code``)
    ├── S3PlanError          (ValueError)    refused before anything is sent: a part size
    │                                        S3 would refuse, a bad URL, a pending upload
    │                                        of this tape made with another part size
    └── S3IntegrityError                     the store holds, or answered, other bytes than
                                             the tape's (BadDigest, an ETag or checksum
                                             that differs, an object that is not the tape)
"""

from __future__ import annotations

from ..errors import TarTapeError

__all__ = ["S3Error", "S3IntegrityError", "S3PlanError"]


class S3Error(TarTapeError):
    """A request to the store failed; ``code`` is S3's error code (``"NoSuchBucket"``), or
    ``None`` when no answer came (a connection error, missing credentials)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class S3PlanError(S3Error, ValueError):
    """The upload was refused before anything was sent: the plan or the request is one the
    store would refuse, or one that cannot go on from the upload already pending."""


class S3IntegrityError(S3Error):
    """The store holds, or answered, other bytes than the tape's: a part's digest refused on
    the way (``BadDigest``), an ETag or checksum that is not the one computed from the tape, a
    completed object of another size or identity."""
