"""Importing an optional dependency, or saying which extra installs it.

Every part that needs an extra (zstandard, cryptography, boto3, a server, an HTTP client or a
framework) imports it through :func:`require`, so a missing one is always the same
:class:`~atartape.MissingDependencyError`, one line naming what to install, never a bare
``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, needed_for: str, *, hint: str = "") -> ModuleType:
    """The module ``module``, imported; raises :class:`MissingDependencyError` naming
    ``pip install 'atartape[<extra>]'`` when it cannot be imported.

    ``needed_for`` starts the message (what needs the module: "a zstd view"); ``hint``, another
    way out, ends it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        missing = exc.name is None or exc.name == package or exc.name.startswith(package + ".")
        why = "which is not installed" if missing else f"which cannot be imported ({exc})"
        raise MissingDependencyError(
            f"{needed_for} needs {package}, {why}: pip install 'atartape[{extra}]'"
            + (f" ({hint})" if hint else ""),
            name=module,
            extra=extra,
        ) from exc
