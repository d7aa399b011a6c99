"""Fixtures for the published tar parser differentials and extraction advisories, built byte by
byte with :mod:`tests.archive.tarbuild` (no binary blob but one: CPython's own reproducer of
CVE-2019-20907, ``tests/data/archives/cpython-recursion.tar``, PSF licence, see SOURCES.md).

Every fixture is extracted into ``<root>/outer/dest``, beside ``<root>/outer/outside`` (holding
``secret.txt``) and ``<root>/outer/flag``: what an attack aims at. Each fixture's docstring says
what it reproduces and where that was published.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.archive import tarbuild as tb

CORPUS = Path(__file__).resolve().parent.parent / "data" / "archives"
PATH_MAX = 4096  # Linux


@dataclass(frozen=True)
class Advisory:
    """One published fault: the archives that reproduce it (extracted in turn into the same
    destination), and what to plant in the destination first (``plant``)."""

    name: str
    source: str  # where it was published
    build: Callable[[Path], list[bytes]]  # dest -> archives
    plant: Callable[[Path], None] = field(default=lambda dest: None)


def _end(*members: bytes) -> bytes:
    return b"".join(members) + tb.end()


# ----------------------------------------------------------------------------- TARmageddon


def tarmageddon_pax_size_larger(dest: Path) -> list[bytes]:
    """CVE-2025-62518 (TARmageddon, tokio-tar and its forks): a PAX ``size`` record of 1536
    over a USTAR header whose size is 0. A reader that skips by the USTAR size reads the data
    (an inner tar) as members: ``smuggled.txt``, a symlink out. GNU tar skips by the PAX size:
    ``outer.txt`` (1536 bytes), then ``after``.
    https://github.com/advisories/GHSA-j5gw-2vrg-8fgx, https://edera.dev/stories/tarmageddon
    """
    inner = tb.file("smuggled.txt", b"evil") + tb.symlink("out", "../outside/secret.txt")
    return [
        _end(tb.pax([("size", "1536")]), tb.header("outer.txt", size=0), inner, tb.file("after"))
    ]


def tarmageddon_pax_size_smaller(dest: Path) -> list[bytes]:
    """CVE-2025-62518, the other way round: a PAX ``size`` of 0 over a USTAR size of 1024.
    GNU tar takes the PAX size: ``outer.txt`` is empty and the 1024 bytes are the next members
    (``smuggled.txt``, then ``after``). A reader that trusts the USTAR size sees one member
    less. (Sources as above.)"""
    inner = tb.file("smuggled.txt", b"evil")
    return [
        _end(tb.pax([("size", "0")]), tb.header("outer.txt", size=1024), inner, tb.file("after"))
    ]


# ----------------------------------------------------------------------------- gh-135034


def _realpath_chain(dest: Path) -> tuple[list[bytes], str]:
    """CPython's ``test_realpath_limit_attack`` (gh-135034): folders of long names, each
    reached through a one-letter symlink, so that the path through the symlinks fits in
    PATH_MAX but its expansion does not; then a symlink whose expansion ``realpath``
    (non-strict) gives up on, pointing 16 levels up. Returns the members and the name of a
    symlink ``escape`` whose resolution is ``dest/..``."""
    steps = "abcdefghijklmnop"
    component = "d" * ((PATH_MAX - len(str(dest)) - 1) // (len(steps) + 1))
    members: list[bytes] = []
    path = ""
    for step in steps:
        members.append(tb.pax([("path", os.path.join(path, component))]))
        members.append(tb.header("dir", typeflag=b"5", mode=0o777))
        members.append(tb.pax([("path", os.path.join(path, step)), ("linkpath", component)]))
        members.append(tb.header("link", typeflag=b"2", mode=0o777))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(tb.pax([("path", linkpath), ("linkpath", os.path.join(*[".."] * len(steps)))]))
    members.append(tb.header("link", typeflag=b"2", mode=0o777))
    members.append(tb.pax([("path", "escape"), ("linkpath", os.path.join(linkpath, ".."))]))
    members.append(tb.header("link", typeflag=b"2", mode=0o777))
    return members, "escape"


def cve_2025_4517_realpath_overflow(dest: Path) -> list[bytes]:
    """CVE-2025-4517 (CPython gh-135034, tarfile's ``data`` filter): through the symlink chain
    ``realpath`` cannot expand, a hard link to ``escape/flag`` (outside), then a file written
    over it, and a new file ``escape/newfile`` (outside).
    https://github.com/python/cpython/issues/135034"""
    members, escape = _realpath_chain(dest)
    members += [
        tb.hardlink("flaglink", f"{escape}/flag"),
        tb.file("flaglink", b"overwrite"),
        tb.file(f"{escape}/newfile", b"new"),
    ]
    return [_end(*members)]


def cve_2025_4138_symlink_outside(dest: Path) -> list[bytes]:
    """CVE-2025-4138 (gh-135034): the same chain, used to make a symlink that points outside
    while the filter computes a harmless target: ``peek -> escape/outside/secret.txt``, then
    a file written through it."""
    members, escape = _realpath_chain(dest)
    members += [tb.symlink("peek", f"{escape}/outside/secret.txt"), tb.file("peek", b"pwned")]
    return [_end(*members)]


def cve_2025_4330_hardlink_outside(dest: Path) -> list[bytes]:
    """CVE-2025-4330 (gh-135034): a hard link out of the destination through the chain
    (``grab -> escape/outside/secret.txt``), then content written into the shared inode."""
    members, escape = _realpath_chain(dest)
    members += [tb.hardlink("grab", f"{escape}/outside/secret.txt"), tb.file("grab", b"pwned")]
    return [_end(*members)]


def cve_2024_12718_metadata_outside(dest: Path) -> list[bytes]:
    """CVE-2024-12718 (gh-135034): modes and mtimes set outside: a folder member named
    through the chain (``escape/outside``, mode 0777, mtime 0) and a hard link to an outside
    file carrying mode 0777; tarfile's ``tar`` filter chmod-ed, ``data`` utime-d the outside
    entries."""
    members, escape = _realpath_chain(dest)
    members += [
        tb.header(f"{escape}/outside", typeflag=b"5", mode=0o777, mtime=0),
        tb.header("meta", typeflag=b"1", linkname=f"{escape}/flag", mode=0o777, mtime=0),
    ]
    return [_end(*members)]


def cve_2025_4435_errors_skipped(dest: Path) -> list[bytes]:
    """CVE-2025-4435 (gh-135034): with ``errorlevel=0`` tarfile skipped a member its filter
    refused and went on with the next ones, which relied on it. atartape stops at the first
    refused member: ``up -> ../outside`` is refused, ``up/planted.txt`` never written."""
    return [_end(tb.symlink("up", "../outside"), tb.file("up/planted.txt", b"pwned"))]


# ----------------------------------------------------------------------------- gh-151558


def gh_151558_hardlink_fallback(dest: Path) -> list[bytes]:
    """CPython gh-151558 (a bypass of CVE-2025-4330 in tarfile's ``data`` filter): where a
    hard link cannot be made, tarfile extracts the member it points at in its place. A link
    to a symlink that is harmless where it is (``a/s -> ../outside/secret.txt`` resolves to
    ``dest/outside/...``) becomes, copied to ``h``, a symlink out of the destination; then a
    file is written through it. https://github.com/python/cpython/issues/151558"""
    return [
        _end(
            tb.directory("a"),
            tb.symlink("a/s", "../outside/secret.txt"),
            tb.hardlink("h", "a/s"),
            tb.file("h", b"pwned"),
        ),
        _end(tb.hardlink("later", "a/not-yet"), tb.symlink("a/not-yet", "../outside")),
    ]


# ----------------------------------------------------------------------------- loops


def cve_2025_8194_negative_offsets(dest: Path) -> list[bytes]:
    """CVE-2025-8194 (CPython gh-130577): a base-256 size of -1024 sends a reader that adds it
    to its offset back to the same header, for ever (tarfile looped). GNU tar: "Archive value
    -1024 is out of off_t range". https://github.com/python/cpython/issues/130577"""
    return [_end(tb.file("first"), tb.header("loop", size=-1024), tb.file("after"))]


def cve_2025_8194_negative_pax_size(dest: Path) -> list[bytes]:
    """CVE-2025-8194, through PAX: ``size=-512`` (GNU tar: "Extended header size=-512 is out
    of range")."""
    return [_end(tb.pax([("size", "-512")]), tb.file("loop"), tb.file("after"))]


def cve_2019_20907_zero_length_record(dest: Path) -> list[bytes]:
    """CVE-2019-20907 (CPython bpo-39017, gh-83198): a PAX record whose length is 0, so that a
    reader adding the length to its position never moves (tarfile looped); CPython's own
    reproducer ``recursion.tar`` too. https://github.com/python/cpython/issues/83198"""
    built = _end(tb.member("PaxHeader", b"0 path=x\n", typeflag=b"x"), tb.file("after"))
    return [built, (CORPUS / "cpython-recursion.tar").read_bytes()]


# ----------------------------------------------------------------------------- GNU tar


def _plant_outside_link(dest: Path) -> None:
    (dest / "x").symlink_to("../outside")


def cve_2025_45582_two_archives(dest: Path) -> list[bytes]:
    """GNU tar CVE-2025-45582: a first archive leaves ``x -> ../outside``, a second writes
    ``x/authorized_keys`` through it (GNU tar follows symlinks already on disk, so its
    "Member name contains '..'" check is bypassed). Here: both in one archive, then each
    archive alone; the planted variant below starts from the link already on disk.
    https://www.cve.org/CVERecord?id=CVE-2025-45582"""
    link = tb.symlink("x", "../outside")
    through = tb.file("x/authorized_keys", b"ssh-ed25519 attacker")
    return [_end(link, through), _end(link), _end(through)]


def cve_2025_45582_planted(dest: Path) -> list[bytes]:
    """CVE-2025-45582 with the first step done by something else: ``x -> ../outside`` is in
    the destination already; the archive writes ``x/authorized_keys``."""
    return [_end(tb.file("x/authorized_keys", b"ssh-ed25519 attacker"))]


# ----------------------------------------------------------------------------- PAX globals


def global_pax_path(dest: Path) -> list[bytes]:
    """A global PAX header (``g``) whose ``path`` renames every later member (GNU tar applies
    it: both members below are listed as ``../outside/evil``); and a global ``linkpath`` that
    retargets every later link. Readers that ignore ``g`` list other names.
    https://pubs.opengroup.org/onlinepubs/9799919799/utilities/pax.html (pax Header Block)"""
    return [
        _end(tb.pax([("path", "../outside/evil")], typeflag=b"g"), tb.file("a"), tb.file("b")),
        _end(
            tb.pax([("linkpath", "../outside/secret.txt")], typeflag=b"g"),
            tb.symlink("s", "harmless"),
            tb.hardlink("h", "harmless"),
        ),
        _end(
            tb.pax([("path", "renamed")], typeflag=b"g"),
            tb.file("a", b"one"),
            tb.pax([("path", "")], typeflag=b"g"),  # an empty value deletes the key
            tb.file("b", b"two"),
        ),
    ]


# ----------------------------------------------------------------------------- repeated names


def name_repeated_as_symlink(dest: Path) -> list[bytes]:
    """A name that is a file, then a symlink out, then a file again (a reader that opens the
    name without ``O_NOFOLLOW`` writes through the link); a folder replaced by a symlink
    before a member inside it; a harmless symlink replaced by a file (the file replaces the
    link, never writes through it). (The shape of CVE-2021-32803/32804 in node-tar and
    CVE-2025-45582 in GNU tar.) https://github.com/advisories/GHSA-r628-mhmh-qjhw"""
    return [
        _end(
            tb.file("x", b"old"),
            tb.symlink("x", "../outside/secret.txt"),
            tb.file("x", b"pwned"),
        ),
        _end(tb.directory("d"), tb.symlink("d", "../outside"), tb.file("d/f", b"pwned")),
        _end(tb.file("y", b"y"), tb.symlink("x", "y"), tb.file("x", b"replaces the link")),
    ]


ADVISORIES = [
    Advisory("tarmageddon-pax-size-larger", "CVE-2025-62518", tarmageddon_pax_size_larger),
    Advisory("tarmageddon-pax-size-smaller", "CVE-2025-62518", tarmageddon_pax_size_smaller),
    Advisory("realpath-overflow", "CVE-2025-4517", cve_2025_4517_realpath_overflow),
    Advisory("symlink-outside", "CVE-2025-4138", cve_2025_4138_symlink_outside),
    Advisory("hardlink-outside", "CVE-2025-4330", cve_2025_4330_hardlink_outside),
    Advisory("metadata-outside", "CVE-2024-12718", cve_2024_12718_metadata_outside),
    Advisory("errors-skipped", "CVE-2025-4435", cve_2025_4435_errors_skipped),
    Advisory("hardlink-fallback", "gh-151558", gh_151558_hardlink_fallback),
    Advisory("negative-size", "CVE-2025-8194", cve_2025_8194_negative_offsets),
    Advisory("negative-pax-size", "CVE-2025-8194", cve_2025_8194_negative_pax_size),
    Advisory("zero-length-record", "CVE-2019-20907", cve_2019_20907_zero_length_record),
    Advisory("symlink-then-member", "CVE-2025-45582", cve_2025_45582_two_archives),
    Advisory(
        "planted-symlink", "CVE-2025-45582", cve_2025_45582_planted, plant=_plant_outside_link
    ),
    Advisory("global-pax", "POSIX pax g records", global_pax_path),
    Advisory("repeated-name", "CVE-2021-32803", name_repeated_as_symlink),
]
