"""Test matrix and checks: ``nox`` runs them all; ``nox -s tests-3.12`` one of them.

Every Python 3.10-3.13 this machine has is tested: those on PATH, and those pyenv keeps off it
(found here, so that README's command alone tests them all). None is ever downloaded: a missing
version is skipped.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True
os.environ["UV_PYTHON_DOWNLOADS"] = "never"  # uv would fetch a missing interpreter otherwise
os.environ["UV_PYTHON_PREFERENCE"] = "only-system"


def _runs(executable: str | None) -> bool:
    if executable is None:
        return False
    done = subprocess.run([executable, "-c", "pass"], capture_output=True, check=False)
    return done.returncode == 0


def _add_pyenv_pythons() -> None:
    """Put pyenv's interpreters of the versions above first on PATH, where the one found there
    does not run (a pyenv shim of a version that is not selected fails)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for version in PYTHONS:
        if _runs(shutil.which(f"python{version}")):
            continue
        candidates = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin")))
        if candidates and _runs(os.path.join(candidates[-1], f"python{version}")):
            found.append(candidates[-1])
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_add_pyenv_pythons()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite, on each Python 3.10-3.13 this machine has."""
    session.install("-e", ".[test]")
    # One pytest worker per core (pytest-xdist): the suite is many short tests.
    session.run("python", "-m", "pytest", "-n", "auto", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import contracts of the layers (pyproject)."""
    session.install("ruff", "import-linter", "-e", ".")
    session.run("ruff", "check", "src", "tests", "examples", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "examples", "bench", "noxfile.py")
    session.run("lint-imports")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install("-e", ".[test,lint]")  # every optional framework, for their types
    session.run("mypy", "--strict", "src/atartape")


@nox.session(python="3.11")
def examples(session: nox.Session) -> None:
    """Each example runs on its own and exits 0."""
    session.install("-e", ".[test]")
    env = {"ATARTAPE_EXAMPLE_SELF_TEST": "1"}
    for example in sorted(glob.glob(os.path.join("examples", "*.py"))):
        session.run("python", example, "--self-test", env=env)
