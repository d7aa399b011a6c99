"""A virtual environment of its own with tartape from PyPI, the library we compare with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARTAPE_VERSION = "3.0.3"


def ensure_tartape(base: Path) -> tuple[Path | None, str]:
    """Return (its python, version) or (None, why it could not be had)."""
    venv = base / "tartape-venv"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    if not done.exists():
        print(f"  installing tartape=={TARTAPE_VERSION} into {venv} ...", flush=True)
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "-q", f"tartape=={TARTAPE_VERSION}"],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                return None, f"could not install tartape: {' / '.join(tail)}"
        done.touch()
    proc = subprocess.run(
        [str(python), "-c", "import tartape; print(tartape.__version__)"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None, f"tartape does not import: {proc.stderr.strip().splitlines()[-1:]}"
    return python, proc.stdout.strip()
