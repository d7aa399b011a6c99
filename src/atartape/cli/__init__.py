"""The ``atartape`` command line (also ``python -m atartape``).

Commands: ``record``, ``info``, ``ls``, ``play``, ``verify``, ``locate``, ``serve``, ``send`` and
``receive``; ``atartape COMMAND --help`` describes each. Data goes to stdout only where a command
produces it (``play -o -``, listings, reports); messages, errors and the progress bar go to
stderr. The bar is shown only when stderr is a terminal, never with ``--quiet``. See
:mod:`atartape.cli.main` for the exit status.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
