"""The HTTP benchmark is now the ``http`` group of run.py; this keeps the old command working:
``python bench/http_bench.py [options]`` runs ``python bench/run.py --only http [options]``.
"""

from __future__ import annotations

import sys

from run import main

if __name__ == "__main__":
    sys.exit(main(["--only", "http", *sys.argv[1:]]))
