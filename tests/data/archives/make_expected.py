#!/usr/bin/env python3
"""Write expected.json: what a correct reader returns for each archive of this corpus.

Run it with Python 3.11 and GNU tar 1.34 on PATH (``python3.11 make_expected.py``); it reads
every archive in this folder twice, once with :mod:`tarfile` and once with GNU tar, compares the
two, and takes, per archive, the reading that DECISIONS below names (tarfile unless said
otherwise, with the reason), plus the corrections listed there where both tools are wrong. The
output is deterministic: archives and keys are sorted, nothing depends on the clock, the
locale, the time zone (GNU tar runs with TZ=UTC and LC_ALL=C) or the machine.

What a member is (one JSON object each, in archive order):

* ``name``: the member name (PAX ``path``, GNU long name or the header's prefix/name), decoded
  as UTF-8 with ``surrogateescape`` (JSON ``\\udcXX`` escapes stand for undecodable bytes), with
  trailing slashes removed (a name made only of slashes keeps them). A name longer than 4096
  characters (Go's 1 MB PAX path) is null, with ``name_length`` (bytes) and ``name_sha256``
  (of its UTF-8 bytes) instead; the same for ``linkname``.
* ``type``: file, dir, symlink, hardlink, chardev, blockdev, fifo, or other (then
  ``typeflag`` says which header type, e.g. "V" for a GNU volume label, "A" for a Solaris ACL
  header). A contiguous file ('7'), a v7 file ('\\0') and a GNU sparse file are "file"; a
  GNU dump directory ('D') is "dir".
* ``size``: the content size of a file (for a sparse file the real size, holes included); 0 for
  every other type, whatever the header's size field says.
* ``mode``: permission bits (``mode & 0o7777``); ``mtime``: whole seconds, rounded down.
* ``linkname``: the target of a symlink or hard link, "" otherwise.
* ``sha256``: of the content, for files (sparse files expanded, holes read as zeros); null for
  other types, and for files over 1 GiB (the 60 GB sparse files of Go's corpus), which are
  checked by their sparse map and ``data_sha256`` instead.
* ``link_target`` (hard links only): the index of the member the link stands for, the last one
  before it whose name is the link's target (null if none).
* ``sparse`` (sparse files only): ``format`` (oldgnu, pax-0.0, pax-0.1, pax-1.0), ``map``, the
  data regions ``[offset, length]`` of the expanded file (empty regions left out), as tarfile
  parsed them, and ``data_sha256``, the digest of those regions' bytes one after the other
  (what the archive stores, without the holes).

``end`` (archives that are read, where tarfile got every size right): ``offset`` where the
members end, ``zero_blocks`` how many zero blocks follow (2 or more is the end-of-archive
marker; GNU tar and tarfile also accept 1 or 0, that is a file that simply ends),
``bytes_after`` what follows those blocks (record padding, or a second archive).

An archive a reader must refuse has ``error`` (why) and ``members_before_error`` (what a
streaming reader may already have yielded) instead of ``members``. ``also_acceptable`` names
another outcome that is defensible (for example refusing a malformed record that the expected
reading tolerates). Per archive, ``source`` and ``why`` say whose reading was taken and why;
``tarfile`` and ``gnutar`` say what each tool did (error, exit status, messages) and how its
reading differs from the expected one.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "expected.json"
SUFFIXES = (".tar", ".tar.bz2", ".tar.gz", ".tar.xz")
CHUNK = 16 * 1024 * 1024
LONG_NAME = 4096  # longer names are written as length + digest (see "name" below)
HASH_LIMIT = 1 << 30  # files larger than this are not hashed whole (see "sha256" below)
FIELDS = ("name", "type", "size", "mode", "mtime", "linkname", "sha256")

# Hash each regular file GNU tar extracts: digest, real size and name, NUL-terminated.
TO_COMMAND = 'sh -c \'h=$(sha256sum); printf "%s %s %s\\0" "${h%% *}" "$TAR_SIZE" "$TAR_FILENAME"\''


# ------------------------------------------------------------------------------ decisions
#
# source: whose reading is right ("tarfile" or "gnutar"); why: the reason, shown in the JSON.
# keep: with error, how many members come whole before the fault (default 0).
# patch: {member index: {field: value}} corrections applied on top of the chosen reading, each
# explained in `why`. error: the archive must be refused (then members_before_error is the
# chosen reading's members). Archives not listed: tarfile, and the script checks that GNU tar
# agrees (it stops with a message when they disagree, so that someone decides).

DECISIONS: dict[str, dict[str, Any]] = {}


def decide(name: str, source: str, why: str, **extra: Any) -> None:
    DECISIONS[name] = {"source": source, "why": why, **extra}


TARFILE_PREFIX_BUG = (
    "tarfile 3.11 joins the bytes at offset 345 of every header to the name as a USTAR prefix, "
    "also in old-GNU headers ('ustar  \\0' magic), where those bytes are the atime and ctime "
    "fields"
)
TARFILE_FIRST_WINS = (
    "tarfile merges consecutive extension headers and keeps the FIRST value of each key; GNU tar "
    "(and Go's reader, whose test expects this result) keeps only the LAST header of each kind"
)
TARFILE_SPARSE_SIZE = (
    "tarfile 3.11 applies PAX records in order, so a 'size' record that comes after "
    "GNU.sparse.realsize replaces the real size by the stored size; GNU tar reports the real "
    "size and the expanded content (Go's reader_test expects the same)"
)

decide(
    "cpython-recursion.tar",
    "tarfile",
    "a global PAX header whose 1-byte payload is cut short: the archive ends at 516 bytes",
    error="truncated: the archive ends inside the data of its first (PAX 'g') header",
)
decide(
    "go-gnu-incremental.tar",
    "gnutar",
    TARFILE_PREFIX_BUG + " (tarfile reports "
    "'12574544345/test2'); GNU tar and Go's reader_test give 'test2/' for the 'D' member "
    "(a GNU dump directory, listed as a directory; its 14 bytes of data are the folder "
    "listing and must be skipped)",
)
decide(
    "go-gnu-multi-hdrs.tar",
    "gnutar",
    TARFILE_FIRST_WINS + ": the name is the second 'L' "
    "(GNU2/...) and the link target the second 'K' (GNU4/...)",
)
decide(
    "go-hdr-only.tar",
    "gnutar",
    "the last 8 headers repeat the first ones with a non-zero size field on types that carry "
    "no data (dir, fifo, hard link, devices, symlink). GNU tar 1.34 reads no data for "
    "directories and hard links but skips the size of symlinks, devices and FIFOs: it skips 5 "
    "bytes (one block) after the fifo, loses its place and prints 'Skipping to next header' "
    "(exit 2). atartape reads as GNU tar does, so it refuses the archive there (the member "
    "after the fifo is no header). tarfile, Go and bsdtar read no data for any of these types "
    "(16 members)",
    error="corrupt: the fifo with size 5 (member 9) is followed by 5 bytes of data, as GNU "
    "tar reads it; the next header is not one (checksum), where GNU tar says 'Skipping to "
    "next header'",
    keep=10,
)
decide(
    "go-invalid-go17.tar",
    "gnutar",
    "written by a buggy pre-1.8 Go writer: old-GNU magic, but the prefix field holds the "
    "directory. GNU tar (and bsdtar) ignore the prefix of an old-GNU header: 'foo'; atartape "
    "answers as GNU tar does. Go's reader_test expects 'aaa.../foo' (Go joins the prefix when "
    "the atime/ctime fields do not parse as numbers), as tarfile does",
    also_acceptable="refusing the archive",
)
decide(
    "go-pax-bad-hdr-file.tar",
    "gnutar",
    "the PAX record '33 path=PAX1/PAX1/long-path-name' ends with a NUL instead of a newline. "
    "Go's reader_test expects ErrHeader; GNU tar says 'Malformed extended header: missing "
    "newline', drops the header and exits 2; tarfile 3.11.7 accepts it (name PAX1/...)",
    error="malformed PAX record: its last byte is not a newline",
    also_acceptable="list 'foo' with a warning, ignoring the malformed header (GNU tar)",
)
decide(
    "go-pax-bad-hdr-large.tar.bz2",
    "tarfile",
    "a valid archive whose PAX header is larger than Go's 1 MiB limit on extension headers "
    "(Go's reader_test expects ErrFieldTooLong, an implementation limit, not a format "
    "error); tarfile reads it. GNU tar lists it but cannot pass the huge name to "
    "--to-command (Argument list too long), hence its missing digest",
    also_acceptable="refuse it for an extension header over the reader's size limit",
)
decide(
    "go-pax-bad-mtime-file.tar",
    "tarfile",
    "the PAX mtime '999xxx9324.432432444444' is not a number. Expected: ignore the record "
    "(with a warning) and keep the header's mtime, as current libarchive does for its own "
    "pax_timestamps archive; tarfile 3.11 sets mtime 0, GNU tar 1.34 and bsdtar 3.6.2 parse "
    "the leading digits (999), Go's reader_test expects ErrHeader",
    patch={0: {"mtime": 1442282516}},
    also_acceptable="refuse the archive (Go: ErrHeader), or mtime 999 (GNU tar 1.34, bsdtar 3.6.2)",
)
decide(
    "go-pax-global-records.tar",
    "gnutar",
    "GNU tar (atartape answers as GNU tar does where readers differ): each global header "
    "replaces the whole global set, and an empty value is used as is. So file1 is named "
    "'global1' with mtime 1500000000, file2 keeps its local path, and the second global "
    "header ('path=' empty) names file3 and file4 '' (GNU tar: \"Substituting `.' for empty "
    "member name\"), file3 keeping its header's mtime 0. tarfile also names them '' but keeps "
    "globals cumulatively (file3's mtime 1500000000); POSIX would delete the key (names file3, "
    "file4); Go's reader and bsdtar do not apply global records at all (names file1..file4, "
    "mtime 0)",
    also_acceptable="refusing the archive",
)
decide(
    "go-pax-multi-hdrs.tar",
    "gnutar",
    TARFILE_FIRST_WINS + ": of four consecutive 'x' "
    "headers only the last (linkpath=PAX4/...) counts; the name is the ustar header's 'bar'",
)
decide("go-pax-nil-sparse-data.tar", "gnutar", TARFILE_SPARSE_SIZE)
decide("go-pax-nil-sparse-hole.tar", "gnutar", TARFILE_SPARSE_SIZE)
decide(
    "go-pax-sparse-big.tar",
    "gnutar",
    TARFILE_SPARSE_SIZE + "; 60 GB: check it by its sparse map, not by a whole-content digest",
)
decide(
    "go-pax-nul-path.tar",
    "tarfile",
    "the PAX path value contains a NUL byte. Go and bsdtar refuse it (Go's reader_test: "
    "ErrHeader); GNU tar cuts the name at the NUL; tarfile keeps the NUL in the name",
    error="PAX path value contains a NUL byte",
    also_acceptable="the name cut at the NUL (GNU tar)",
)
decide(
    "go-pax-nul-xattrs.tar",
    "tarfile",
    "a PAX record key contains a NUL byte (SCHILY.xattr.null\\0=fizzbuzz). Go (ErrHeader), "
    "GNU tar ('Malformed extended header: missing equal sign', exit 2) and bsdtar reject "
    "it; tarfile accepts it",
    error="PAX record key contains a NUL byte",
)
decide(
    "go-pax-path-hdr.tar",
    "tarfile",
    "a PAX header and nothing after it: the file ends where the member's header should be, "
    "with no end-of-archive blocks. tarfile: 'empty header'; GNU tar lists nothing and "
    "exits 0",
    error="the archive ends after an extension header, without its member",
)
decide(
    "go-sparse-formats.tar",
    "tarfile",
    "its sparse members have 95 data regions of 1 byte each, stored back to back. tarfile's "
    "content matches the CRC32 (5375e1d2) of Go's reader_test; GNU tar 1.34 reads each "
    "region from the start of a new 512-byte block (true only of archives GNU tar writes, "
    "whose regions are whole blocks except the last), so it extracts wrong bytes and then "
    "hits 'Unexpected EOF in archive'",
)
decide(
    "go-writer-big.tar",
    "tarfile",
    "Go's writer test output: the header of a 16 GiB file with none of its data",
    error="truncated: the data of the 16 GiB member is missing",
)
decide(
    "go-writer-big-long.tar",
    "tarfile",
    "Go's writer test output: GNU long name + header of a 16 GiB file, without its data",
    error="truncated: the data of the 16 GiB member is missing",
)
for name in ("go-issue10968.tar", "go-issue12435.tar", "go-neg-size.tar"):
    decide(
        name,
        "tarfile",
        "fuzzer-found corrupt header: Go (ErrHeader), tarfile ('invalid header') and GNU tar "
        "('This does not look like a tar archive') all refuse it",
        error="not a valid tar header (bad checksum or number field)",
    )
decide(
    "go-issue11169.tar",
    "tarfile",
    "a PAX header whose payload runs past the end of the 602-byte file: Go (ErrHeader), "
    "tarfile and GNU tar ('Unexpected EOF in archive') refuse it",
    error="truncated: the archive ends inside an extension header's data",
)
decide(
    "libarchive-test_compat_solaris_tar_acl.tar",
    "tarfile",
    "each file is preceded by a Solaris ACL header (type 'A', its data is the ACL text). "
    "tarfile and GNU tar list the 'A' headers as members of an unknown type (GNU tar "
    "extracts them as files, which the real member then replaces); bsdtar reads them as "
    "extension headers that give the next member its ACL and lists only the 4 real members",
    also_acceptable="skip the 'A' headers as extension headers (bsdtar): only the members "
    "of index 1, 3, 5, 7",
)
decide(
    "libarchive-test_read_format_gtar_redundant_L.tar",
    "gnutar",
    "four consecutive GNU 'L' headers: the last one gives the name (GNU tar; libarchive "
    "warns \"Redundant 'L'\"); " + TARFILE_FIRST_WINS,
)
decide(
    "libarchive-test_read_format_gtar_sparse_1_17_posix10_modified.tar",
    "gnutar",
    "the first member's PAX 1.0 sparse map starts with two lines that are not numbers "
    "('#!gnu-sparse-format', '#format:1.0'). GNU tar: 'sparse: malformed sparse archive "
    "member' (it lists all 3 members, exits 2); tarfile raises ValueError",
    error="malformed GNU sparse 1.0 map: a map line is not a decimal number",
)
decide(
    "libarchive-test_read_format_gtar_sparse_skip_entry.tar",
    "gnutar",
    "a PAX 1.0 sparse file of 10 GiB real size whose stored size (4612) is only in the PAX "
    "'size' record; libarchive's test expects 'a' (10737418244 bytes) then 'b' (4 bytes), "
    "as GNU tar lists them; tarfile 3.11 takes the header size (4) and fails with "
    "'unexpected end of data'",
)
decide(
    "libarchive-test_read_format_tar_V_negative_size.tar",
    "gnutar",
    "a GNU volume header ('V') with a negative base-256 size. libarchive's test expects "
    "ARCHIVE_FATAL; GNU tar: 'base-256 value is out of off_t range'; tarfile yields the "
    "label, then fails",
    error="negative size field (base-256)",
)
decide(
    "libarchive-test_read_format_tar_empty_pax.tar",
    "gnutar",
    "only a global PAX header (a 'comment', as git archive writes) and the end-of-archive "
    "blocks: an archive with no members (libarchive's test expects EOF at once, GNU tar lists "
    "nothing and exits 0); tarfile 3.11 fails with 'end of file header'",
)
decide(
    "libarchive-test_read_format_tar_invalid_pax_size.tar",
    "tarfile",
    "fuzzed: a PAX header with garbage records and an out-of-range size. tarfile: 'invalid "
    "header'; GNU tar prints 5 errors, lists a nonsense hard link and exits 2",
    error="malformed PAX header (bad record length / size out of range)",
)
decide(
    "libarchive-test_read_format_tar_pax_timestamps.tar",
    "tarfile",
    "the PAX mtime '1748089464.951928467a' has a trailing letter. libarchive's test expects "
    "a warning and the header's mtime (224165920, stored in base-256); tarfile 3.11 sets 0, "
    "GNU tar 1.34 and bsdtar 3.6.2 parse the number before the letter (1748089464)",
    patch={0: {"mtime": 224165920}},
    also_acceptable="refuse the archive, or mtime 1748089464 (GNU tar 1.34, bsdtar 3.6.2)",
)
decide(
    "libarchive-test_read_pax_empty_val_no_nl.tar",
    "tarfile",
    "a PAX header whose only record, '4 x=', has no newline. libarchive's test expects a "
    "warning and the member 'empty'; GNU tar warns 'missing newline' and exits 2; tarfile "
    "accepts it",
    also_acceptable="refuse the archive for the malformed record",
)


# ------------------------------------------------------------------------------ tarfile

_TARFILE_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
    tarfile.DIRTYPE: "dir",
    b"D": "dir",
    tarfile.FIFOTYPE: "fifo",
}


def normalize(name: str) -> str:
    stripped = name.rstrip("/")
    return stripped if stripped else name


def sparse_info(member: tarfile.TarInfo) -> dict[str, Any] | None:
    if member.sparse is None:
        return None
    pax = member.pax_headers
    if member.type == tarfile.GNUTYPE_SPARSE:
        fmt = "oldgnu"
    elif "GNU.sparse.map" in pax:
        fmt = "pax-0.1"
    elif pax.get("GNU.sparse.major") == "1":
        fmt = "pax-1.0"
    else:
        fmt = "pax-0.0"
    regions = [[offset, length] for offset, length in member.sparse if length]
    return {"format": fmt, "map": regions}


def digest(stream: Any) -> str:
    h = hashlib.sha256()
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


def stored_digest(tf: tarfile.TarFile, member: tarfile.TarInfo, regions: list[list[int]]) -> str:
    """The digest of a sparse member's stored data: its regions back to back from offset_data."""
    h = hashlib.sha256()
    fileobj = tf.fileobj
    assert fileobj is not None
    here = fileobj.tell()
    fileobj.seek(member.offset_data)
    left = sum(length for _, length in regions)
    while left:
        chunk = fileobj.read(min(left, CHUNK))
        if not chunk:
            raise ValueError(f"the stored data of {member.name!r} ends early")
        h.update(chunk)
        left -= len(chunk)
    fileobj.seek(here)
    return h.hexdigest()


def end_marker(tf: tarfile.TarFile) -> dict[str, int]:
    """What follows the last member: zero blocks, then other bytes (tarfile's offsets)."""
    fileobj = tf.fileobj
    assert fileobj is not None
    fileobj.seek(tf.offset)
    rest = fileobj.read()
    zeros = 0
    while rest[zeros * 512 : (zeros + 1) * 512] == bytes(512):
        zeros += 1
    return {
        "offset": tf.offset,
        "zero_blocks": zeros,
        "bytes_after": len(rest) - zeros * 512,
    }


END: dict[str, dict[str, int]] = {}


def read_with_tarfile(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    members: list[dict[str, Any]] = []
    mode = (
        "r:bz2"
        if path.name.endswith(".bz2")
        else "r:gz"
        if path.name.endswith(".gz")
        else ("r:xz" if path.name.endswith(".xz") else "r:")
    )
    try:
        with tarfile.open(path, mode) as tf:
            for m in tf:
                kind = _TARFILE_TYPES.get(m.type, "other")
                entry: dict[str, Any] = {
                    "name": normalize(m.name),
                    "type": kind,
                    "size": m.size if kind == "file" else 0,
                    "mode": m.mode & 0o7777,
                    "mtime": math.floor(m.mtime),
                    "linkname": m.linkname if kind in ("symlink", "hardlink") else "",
                    "sha256": None,
                }
                if kind == "other":
                    entry["typeflag"] = m.type.decode("latin-1")
                if kind == "file":
                    reader = tf.extractfile(m)
                    assert reader is not None
                    info = sparse_info(m)
                    if m.size <= HASH_LIMIT:
                        entry["sha256"] = digest(reader)
                    if info is not None:
                        info["data_sha256"] = stored_digest(tf, m, info["map"])
                        entry["sparse"] = info
                members.append(entry)
            END[path.name] = end_marker(tf)
    except Exception as exc:  # any failure is the answer
        return members, f"{type(exc).__name__}: {exc}"
    return members, None


# ------------------------------------------------------------------------------ GNU tar

_ESCAPES = {
    "\\": 0x5C,
    '"': 0x22,
    "n": 0x0A,
    "t": 0x09,
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "r": 0x0D,
    "v": 0x0B,
    "?": 0x3F,
}


def c_unquote(text: str, start: int) -> tuple[str, int]:
    """Decode the C-quoted string starting at text[start] == '"'; return it and the end index."""
    assert text[start] == '"', text
    out = bytearray()
    i = start + 1
    while True:
        ch = text[i]
        if ch == '"':
            return out.decode("utf-8", "surrogateescape"), i + 1
        if ch == "\\":
            nxt = text[i + 1]
            if nxt in "01234567":
                digits = re.match(r"[0-7]{1,3}", text[i + 1 :]).group(0)  # type: ignore[union-attr]
                out.append(int(digits, 8))
                i += 1 + len(digits)
                continue
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out += ch.encode("utf-8", "surrogateescape")
        i += 1


_LINE = re.compile(
    r"^(?P<mode>\S{10})\S*\s+(?P<owner>\S+)\s+(?P<size>\d+(?:,\d+)?)\s+"
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?|-?\d+(?:\.\d+)?)\s+(?P<rest>\".*)$"
)
_GNU_TYPES = {
    "-": "file",
    "C": "file",
    "h": "hardlink",
    "l": "symlink",
    "d": "dir",
    "c": "chardev",
    "b": "blockdev",
    "p": "fifo",
}


def mode_bits(text: str) -> int:
    """Permission bits of an ``ls``-style mode string such as ``-rwsr-x--T``."""
    bits = 0
    for char, bit in zip(text[1:10], (0o400, 0o200, 0o100, 0o40, 0o20, 0o10, 0o4, 0o2, 0o1)):
        if char in "rwxst":  # s/t: set-id or sticky with execute; S/T: without
            bits |= bit
    if text[3] in "sS":
        bits |= 0o4000
    if text[6] in "sS":
        bits |= 0o2000
    if text[9] in "tT":
        bits |= 0o1000
    return bits


def gnu_time(text: str) -> int:
    if "-" in text[1:] and ":" in text:
        whole, _, _frac = text.partition(".")
        fields = [int(x) for x in re.split(r"[- :]", whole)]
        return calendar.timegm((*fields, 0, 0, 0))
    return math.floor(float(text))


def parse_listing(stdout: bytes) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = []
    for raw_line in stdout.decode("ascii").splitlines():
        m = _LINE.match(raw_line)
        if m is None:
            raise ValueError(f"cannot parse GNU tar line {raw_line!r}")
        name, end = c_unquote(m["rest"], 0)
        rest = m["rest"][end:]
        link = ""
        char = m["mode"][0]
        kind = _GNU_TYPES.get(char, "other")
        entry: dict[str, Any] = {}
        if rest.startswith(" -> "):
            link, _ = c_unquote(rest, 4)
        elif rest.startswith(" link to "):
            link, _ = c_unquote(rest, 9)
            kind = "hardlink"
        elif rest.startswith("--Volume Header--"):
            kind, entry["typeflag"] = "other", "V"
        elif rest.startswith(" unknown file type "):
            kind = "other"
            entry["typeflag"] = re.search(r"'(.)'", rest).group(1)  # type: ignore[union-attr]
        elif rest:
            raise ValueError(f"unexpected tail in GNU tar line {raw_line!r}")
        size = 0 if "," in m["size"] else int(m["size"])
        members.append(
            {
                "name": normalize(name),
                "type": kind,
                "size": size if kind == "file" else 0,
                "mode": mode_bits(m["mode"]),
                "mtime": gnu_time(m["time"]),
                "linkname": link,
                "sha256": None,
                **entry,
            }
        )
    return members


def read_with_gnutar(path: Path) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC", "LC_ALL": "C"}
    common = ["-P", "-f", str(path)]
    listing = subprocess.run(
        ["tar", "-tv", "--full-time", "--numeric-owner", "--quoting-style=c", *common],
        capture_output=True,
        env=env,
        check=False,
    )
    members = parse_listing(listing.stdout)
    files = [m for m in members if m["type"] == "file" and m["size"] <= HASH_LIMIT]
    big = [m["name"] for m in members if m["type"] == "file" and m["size"] > HASH_LIMIT]
    excludes = ["--anchored", "--no-wildcards", *(f"--exclude={name}" for name in big)]
    contents = subprocess.run(
        ["tar", "-x", *excludes, "--to-command", TO_COMMAND, *common],
        capture_output=True,
        env=env,
        check=False,
        cwd="/",
    )
    hashes = [rec.split(b" ", 2) for rec in contents.stdout.split(b"\0") if rec]
    # GNU tar runs the command for regular files and for members of unknown types (which it
    # extracts as regular files): match each record with the next listed member of its name.
    notes = []
    position = 0
    for sha, size, raw_name in hashes:
        name = normalize(raw_name.decode("utf-8", "surrogateescape"))
        for index in range(position, len(members)):
            listed = members[index]["name"]
            if listed == name or (listed == "" and name == "."):
                position = index + 1
                if members[index]["type"] == "file":
                    members[index]["sha256"] = sha.decode()
                    if int(size) != members[index]["size"]:
                        notes.append(f"(-x) {name!r}: TAR_SIZE {int(size)}")
                break
        else:
            notes.append(f"(-x) extracted {name!r}, which the listing does not show here")
    for member in files:
        if member["sha256"] is None:
            member["sha256"] = "(not extracted by GNU tar)"
    lines = (
        listing.stderr.decode("utf-8", "replace").splitlines()
        + contents.stderr.decode("utf-8", "replace").splitlines()
    )
    # No process ids, and no endless lines, so that the output stays the same from run to run.
    lines = [re.sub(r"^tar: \d+: ", "tar: PID: ", line) for line in lines]
    lines = [line if len(line) <= 160 else line[:150] + " [...]" for line in lines]
    stderr = sorted(set(lines)) + notes
    return {
        "members": members,
        "exit": max(listing.returncode, contents.returncode),
        "stderr": stderr,
    }


# ------------------------------------------------------------------------------ comparing


def link_targets(members: list[dict[str, Any]]) -> None:
    """Give each hard link ``link_target``: the index of the member it stands for.

    That is the last member before the link whose name is the link's target (as GNU tar, bsdtar
    and tarfile resolve it: extraction creates the link to the file on disk at that moment),
    or null when no earlier member has that name.
    """
    for i, member in enumerate(members):
        if member["type"] != "hardlink":
            continue
        target = normalize(member["linkname"])
        member["link_target"] = next(
            (j for j in range(i - 1, -1, -1) if members[j]["name"] == target), None
        )


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:100]}... ({len(text)} characters)"


def differences(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    out = []
    if len(ours) != len(theirs):
        out.append(f"{len(ours)} members against {len(theirs)}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        for field in FIELDS:
            if a[field] != b[field]:
                out.append(f"member {i} {field}: {short(a[field])} against {short(b[field])}")
    return out


def shorten_long_names(members: list[dict[str, Any]]) -> None:
    """Names and link targets over LONG_NAME characters are given by length and digest."""
    for member in members:
        for field in ("name", "linkname"):
            value = member[field]
            if len(value) > LONG_NAME:
                raw = value.encode("utf-8", "surrogateescape")
                member[field] = None
                member[f"{field}_length"] = len(raw)
                member[f"{field}_sha256"] = hashlib.sha256(raw).hexdigest()


def expected_for(path: Path) -> dict[str, Any]:
    t_members, t_error = read_with_tarfile(path)
    gnu = read_with_gnutar(path)
    decision = DECISIONS.get(path.name, {"source": "tarfile", "why": ""})
    source = decision["source"]
    chosen = [dict(m) for m in (t_members if source == "tarfile" else gnu["members"])]
    if source == "gnutar":
        # GNU tar's listing does not show the sparse map: take it from tarfile's reading of the
        # same member when there is one.
        for i, member in enumerate(chosen):
            same = i < len(t_members) and t_members[i]["name"] == member["name"]
            if same and "sparse" in t_members[i]:
                member["sparse"] = t_members[i]["sparse"]
    for index, fields in decision.get("patch", {}).items():
        chosen[int(index)].update(fields)
    link_targets(chosen)
    versus_tarfile = differences(chosen, t_members)
    versus_gnutar = differences(chosen, gnu["members"])
    shorten_long_names(chosen)
    if t_error and source == "tarfile" and "error" not in decision:
        raise SystemExit(f"{path.name}: tarfile fails ({t_error}) and no decision says why")
    if source == "tarfile" and not decision["why"] and (versus_gnutar or gnu["exit"]):
        raise SystemExit(
            f"{path.name}: tarfile and GNU tar disagree and no decision says who is right:\n  "
            + "\n  ".join(versus_gnutar + gnu["stderr"])
        )
    result: dict[str, Any] = {
        "source": source,
        "why": decision["why"],
        "tarfile": {"error": t_error, "differs": versus_tarfile},
        "gnutar": {"exit": gnu["exit"], "stderr": gnu["stderr"], "differs": versus_gnutar},
    }
    sizes_agree = not any(" size: " in line for line in versus_tarfile)
    if path.name in END and "error" not in decision and sizes_agree:
        result["end"] = END[path.name]
    if "also_acceptable" in decision:
        result["also_acceptable"] = decision["also_acceptable"]
    if "error" in decision:
        result["error"] = decision["error"]
        result["members_before_error"] = chosen[: decision.get("keep", 0)]
    else:
        result["members"] = chosen
    return result


def tool_versions() -> dict[str, str]:
    tar = subprocess.run(["tar", "--version"], capture_output=True, check=True)
    return {
        "python": ".".join(map(str, sys.version_info[:3])),
        "gnutar": tar.stdout.decode().splitlines()[0],
    }


def main() -> None:
    if sys.version_info[:2] != (3, 11):
        raise SystemExit("run this with Python 3.11: tarfile's behaviour differs between versions")
    versions = tool_versions()
    if not versions["gnutar"].endswith(" 1.34"):
        raise SystemExit(f"GNU tar 1.34 is needed, not {versions['gnutar']!r}")
    names = sorted(p.name for p in HERE.iterdir() if p.name.endswith(SUFFIXES))
    unknown = sorted(set(DECISIONS) - set(names))
    if unknown:
        raise SystemExit(f"decisions for archives that are not here: {unknown}")
    archives = {}
    for name in names:
        print(name, file=sys.stderr, flush=True)
        archives[name] = expected_for(HERE / name)
    document = {
        "generated_by": "make_expected.py",
        "tools": versions,
        "archives": archives,
    }
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    OUTPUT.write_text(text, encoding="ascii")


if __name__ == "__main__":
    main()
