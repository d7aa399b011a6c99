"""Test matrix and checks: ``nox`` runs them all; ``nox -s tests-3.12`` one of them."""

from __future__ import annotations

import glob
import os

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["lint", "typecheck", "tests", "examples"]
nox.options.default_venv_backend = "uv|virtualenv"
# Run on every Python found here and skip the others, also on CI (nox errors there otherwise).
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True


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
