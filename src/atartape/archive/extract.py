"""Safe extraction: the checks and the disk writes behind ``Archive.extract`` and ``extract_all``.

:func:`member_parts` is pure. Every method of :class:`Extractor` touches the disk and is meant
to run in a worker thread (``anyio.to_thread.run_sync``), one call at a time.

The policy, applied to every member before anything of it is written:

- its name must be relative, without ``..`` components or NUL bytes; a link target must hold
  no NUL byte either;
- device files and FIFOs are refused; other headers (Solaris ACLs, volume labels, ...) are not
  extracted;
- no existing component of its parent path in the destination may be a symlink (nothing is
  ever written through a symlink) or anything but a folder;
- a hard link's target must be a path inside the destination reached through folders only; a
  hard link to a symlink is made as a copy of that symlink, under the symlink rules below;
- **no symlink may resolve outside the destination, now or after any later member** (below).

A refusal raises :class:`UnsafeMemberError` naming the member, as does a name or target the file
system cannot hold (too long, not representable). Files are written under a temporary name
beside their final one and renamed into place (:class:`atartape._engine.files.AtomicFile`), so
an interrupted extraction never leaves a partial file under a real name; a sparse file is
written by seeking, so its holes stay holes where the file system allows. Files get the
member's permission bits without setuid, setgid and sticky bits; files and links get its mtime.
Folders get theirs when
:meth:`Extractor.finish` runs (also after a refusal part-way): deepest first, keeping the sticky
bit, and **a folder that would be world-writable without the sticky bit loses its world-write
bit** (``0777`` becomes ``0775``; ``1777`` stays ``1777``). **The destination folder itself is
never changed**: a member naming it (``.``, ``./``) sets neither its mode nor its mtime (nothing
here changes an owner), as only what extraction creates is the archive's to set.

Symlink chains
--------------
Checking each symlink when it is created is not enough: ``t -> l/..`` is harmless while ``l``
does not exist, and becomes ``dest/..`` once ``l -> .`` is created; a chain can also be built so
that every step looks local. The defence (:class:`LinkGuard`) keeps, for every symlink in the
destination (those found there at the first symlink operation, and every one created since):

1. its **resolution**, computed here, never by the operating system: starting from the link's
   folder, each component of the target is looked up in the destination with ``lstat``; a
   symlink met on the way is expanded in place (its target's components are pushed in front of
   the rest), ``..`` goes up one level, and going up from the destination itself or an absolute
   target count as **outside**; a path that cannot be examined (too long) counts as outside
   too. A resolution that needs more than 256 expansions leads nowhere on any system (Linux
   gives up after 40, BSDs after 32): a loop, allowed. A component that does not exist yet (or
   is a file) is taken as a plain folder name: that is what it becomes if a folder is created
   there later; if a file is, no system resolves the path at all; if a symlink is, that is the
   case handled next;
2. the set of paths that resolution **depended on**: every path it looked up that was a symlink,
   a file or missing (real folders never change: nothing here removes a folder or replaces one).

Before a symlink is created at ``P`` (or a symlink at ``P`` is replaced by anything), the new
state is simulated: the new link must resolve inside, and every symlink whose resolution depended
on ``P`` is resolved again with the new entry in place; if one of them, inside before, would end
up outside, the new member is refused (naming the earlier link). Otherwise the entry is created
and the resolutions that changed are recorded, with their new dependencies. By induction, after
every step each symlink that resolved inside still does, whatever the order of the members: a
resolution changes only when an entry on a path it depends on changes, and every such change is
checked before it happens. The cost is one resolution per new link plus one per dependent link,
and one walk of the destination's existing entries (without following links) at the first
symlink operation. Where file systems usually ignore case (macOS, Windows) paths are compared
case-folded and NFC-normalized, so that a link ``L`` counts as the ``l`` a resolution passed
through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from .._engine.files import AtomicFile
from ..errors import UnsafeMemberError
from ..format.members import Member, MemberType

__all__ = ["Extractor", "LinkGuard", "dir_mode", "file_mode", "member_parts"]

_REFUSED_TYPES = {
    MemberType.CHAR_DEVICE: "a character device",
    MemberType.BLOCK_DEVICE: "a block device",
    MemberType.FIFO: "a FIFO",
}
# Past this many expansions no system resolves a path (Linux stops at 40, BSDs and macOS at 32):
# such a link (a loop) leads nowhere, which is safe. Checking further than any system follows
# is what makes "nowhere" true everywhere.
MAX_SYMLINK_EXPANSIONS = 256
_LONG_NAME = 200  # longer file names are written under a short temporary name first
# Errors that say the member cannot exist here (its name or target), not that the disk failed.
_MEMBER_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EILSEQ,
        errno.EINVAL,
        errno.ELOOP,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EFBIG,  # a (sparse) size the file system cannot have
    }
)


def shown(text: str, limit: int = 200) -> str:
    """``repr(text)``, shortened when long (a 1 MiB name makes a poor error message)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r}...{text[-limit // 4 :]!r} ({len(text)} characters)"


def _unsafe(member: Member, why: str) -> UnsafeMemberError:
    return UnsafeMemberError(f"refusing to extract {shown(member.name)}: {why}", member=member.name)


@contextlib.contextmanager
def _member_errors(member: Member) -> Iterator[None]:
    """Turn file system errors caused by the member itself into :class:`UnsafeMemberError`."""
    try:
        yield
    except UnsafeMemberError:
        raise
    except ValueError as exc:  # e.g. "embedded null byte"
        raise _unsafe(member, f"the file system cannot hold it ({exc})") from None
    except OSError as exc:
        if exc.errno not in _MEMBER_ERRNOS:
            raise
        raise _unsafe(member, f"the file system cannot hold it ({exc.strerror})") from None


def file_mode(mode: int) -> int:
    """The permission bits a file or symlink gets: setuid, setgid and sticky bits dropped."""
    return mode & 0o777


def dir_mode(mode: int) -> int:
    """The permission bits a folder gets: setuid and setgid dropped, the sticky bit kept, and
    world-write dropped unless the sticky bit is set (no world-writable folder without it)."""
    bits = mode & 0o1777
    if bits & 0o002 and not bits & 0o1000:
        bits &= ~0o002
    return bits


def _split_relative(member: Member, path: str, what: str) -> list[str]:
    """The components of a relative archive path; refuses absolute paths, ``..`` and NUL."""
    if "\0" in path:
        raise _unsafe(member, f"its {what} contains a NUL byte")
    if path.startswith("/") or os.path.isabs(path):
        raise _unsafe(member, f"its {what} {shown(path)} is absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise _unsafe(member, f"its {what} {shown(path)} has a '..' component")
        if os.sep in part or (os.altsep and os.altsep in part):
            raise _unsafe(member, f"its {what} {shown(path)} has a path separator of this OS")
    return parts


def member_parts(member: Member) -> list[str]:
    """The path components of ``member`` inside the destination, once its name and type are safe.

    Raises :class:`UnsafeMemberError` for an absolute name, a ``..`` component, a NUL byte (in
    the name or the link target), a device file or FIFO, an empty symlink target, and a name
    that designates the destination itself (unless the member is a folder: then ``[]``).
    """
    if member.type in _REFUSED_TYPES:
        raise _unsafe(member, f"it is {_REFUSED_TYPES[member.type]}")
    parts = _split_relative(member, member.name, "name")
    if not parts and member.type is not MemberType.DIRECTORY:
        raise _unsafe(member, "its name designates the destination folder itself")
    if "\0" in member.linkname:
        raise _unsafe(member, "its link target contains a NUL byte")
    if member.type is MemberType.SYMLINK and not member.linkname:
        raise _unsafe(member, "it is a symlink with an empty target")
    return parts


def _set_mtime(path: str, mtime: float, *, follow: bool = True) -> None:
    if not follow and os.utime not in os.supports_follow_symlinks:
        return
    with contextlib.suppress(OverflowError, ValueError, OSError):
        os.utime(path, (mtime, mtime), follow_symlinks=follow)


# ----------------------------------------------------------------------------- symlink guard

Path = tuple[str, ...]  # components below the destination
_DIR, _FILE, _MISSING, _LINK, _UNKNOWN = "dir", "file", "missing", "link", "unknown"


@dataclass(frozen=True, slots=True)
class _Resolution:
    inside: bool
    depends: frozenset[Path]
    why: str = ""


class LinkGuard:
    """Keeps every symlink of a destination resolving inside it (see the module docstring).

    ``_lookup`` is the only place that touches the disk: ``lstat`` and ``readlink`` of paths
    inside the root, never following a link. Paths are compared by :meth:`key`: case-folded
    and NFC-normalized where file systems usually ignore case (macOS, Windows; ``fold``), so
    that ``L`` is known to be ``l`` there.
    """

    def __init__(self, root: str, *, fold: bool | None = None) -> None:
        self.root = root
        self.fold = sys.platform in ("darwin", "win32") if fold is None else fold
        self.loaded = False
        self.links: dict[Path, tuple[Path, str]] = {}  # key -> (path, target) of every symlink
        self._resolved: dict[Path, _Resolution] = {}  # key -> where that symlink leads
        self._dependents: dict[Path, set[Path]] = {}  # key of a path -> keys of links using it

    def key(self, path: Path) -> Path:
        if not self.fold:
            return path
        return tuple(unicodedata.normalize("NFC", part).casefold() for part in path)

    # -------------------------------------------------------------- the model

    def _lookup(self, path: Path, overlay: dict[Path, str | None]) -> tuple[str, str]:
        key = self.key(path)
        if key in overlay:
            target = overlay[key]
            return (_FILE, "") if target is None else (_LINK, target)
        full = os.path.join(self.root, *path)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return _MISSING, ""
        except (OSError, ValueError) as exc:  # too long, unreadable: cannot be vouched for
            return _UNKNOWN, getattr(exc, "strerror", None) or str(exc)
        if stat.S_ISLNK(st.st_mode):
            try:
                return _LINK, os.readlink(full)
            except OSError as exc:
                return _UNKNOWN, exc.strerror or str(exc)
        return (_DIR, "") if stat.S_ISDIR(st.st_mode) else (_FILE, "")

    def resolve(
        self, link: Path, target: str, overlay: dict[Path, str | None] | None = None
    ) -> _Resolution:
        """Where the symlink at ``link`` with ``target`` leads: inside or not, and what that
        depends on (as keys). ``overlay`` maps keys to a symlink target (or ``None``: a file)
        that replaces what is on disk, to check a state before creating it."""
        overlay = overlay or {}
        depends: set[Path] = set()
        position = list(link[:-1])
        pending = target.split("/")
        if target.startswith("/"):
            return _Resolution(False, frozenset(depends), f"its target {shown(target)} is absolute")
        expansions = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not position:
                    return _Resolution(False, frozenset(depends), "it resolves outside")
                position.pop()
                continue
            candidate = (*position, part)
            kind, link_target = self._lookup(candidate, overlay)
            if kind == _DIR:
                position.append(part)
                continue
            depends.add(self.key(candidate))
            if kind == _LINK:
                expansions += 1
                if expansions > MAX_SYMLINK_EXPANSIONS:  # a loop: it resolves nowhere
                    return _Resolution(True, frozenset(depends), "a loop")
                if link_target.startswith("/"):
                    why = (
                        f"it goes through {shown('/'.join(candidate))}, a link to an absolute path"
                    )
                    return _Resolution(False, frozenset(depends), why)
                pending[:0] = link_target.split("/")
                continue
            if kind == _UNKNOWN:
                why = f"{shown('/'.join(candidate))} cannot be examined ({link_target})"
                return _Resolution(False, frozenset(depends), why)
            position.append(part)  # missing or a file: what a folder created there would be
        return _Resolution(True, frozenset(depends))

    def _record(self, key: Path, resolution: _Resolution) -> None:
        self._forget(key)
        self._resolved[key] = resolution
        for path in resolution.depends:
            self._dependents.setdefault(path, set()).add(key)

    def _forget(self, key: Path) -> None:
        old = self._resolved.pop(key, None)
        if old is None:
            return
        for path in old.depends:
            users = self._dependents.get(path)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._dependents[path]

    def load(self) -> None:
        """Find and resolve the symlinks already in the destination (once)."""
        if self.loaded:
            return
        self.loaded = True
        stack: list[Path] = [()]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(os.path.join(self.root, *folder)) as listing:
                    entries = list(listing)
            except OSError:
                continue
            for entry in entries:
                path = (*folder, entry.name)
                try:
                    if entry.is_symlink():
                        self.links[self.key(path)] = (path, os.readlink(entry.path))
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(path)
                except OSError:
                    continue
        for key, (path, target) in self.links.items():
            self._record(key, self.resolve(path, target))

    # -------------------------------------------------------------- changes

    def _recheck(
        self, member: Member, changed: Path, overlay: dict[Path, str | None]
    ) -> dict[Path, _Resolution]:
        """The new resolutions of the symlinks that depend on the path whose key is
        ``changed``; refuses the member when one that resolved inside would resolve outside."""
        updated: dict[Path, _Resolution] = {}
        for key in sorted(self._dependents.get(changed, ())):
            if key == changed or key not in self.links:
                continue
            path, target = self.links[key]
            before = self._resolved.get(key)
            after = self.resolve(path, target, overlay)
            if before is not None and before.inside and not after.inside:
                raise _unsafe(
                    member,
                    f"it would make the symlink {shown('/'.join(path))} -> "
                    f"{shown(target)} resolve outside the destination ({after.why})",
                )
            updated[key] = after
        return updated

    def check_symlink(
        self, member: Member, link: Path, target: str
    ) -> tuple[_Resolution, dict[Path, _Resolution]]:
        """Refuse a symlink at ``link`` that resolves outside, or that makes another one do so;
        returns what :meth:`commit_symlink` records once it is created."""
        self.load()
        key = self.key(link)
        overlay: dict[Path, str | None] = {key: target}
        own = self.resolve(link, target, overlay)
        if not own.inside:
            raise _unsafe(
                member, f"its target {shown(target)} resolves outside the destination: {own.why}"
            )
        return own, self._recheck(member, key, overlay)

    def commit_symlink(
        self, link: Path, target: str, own: _Resolution, updated: dict[Path, _Resolution]
    ) -> None:
        key = self.key(link)
        self.links[key] = (link, target)
        self._record(key, own)
        for other, resolution in updated.items():
            self._record(other, resolution)

    def check_replace(self, member: Member, path: Path) -> dict[Path, _Resolution] | None:
        """Before the symlink at ``path`` is replaced by a file: refuse if that makes another
        symlink resolve outside. Returns what :meth:`commit_replace` records."""
        self.load()
        key = self.key(path)
        if key not in self.links:
            return None
        return self._recheck(member, key, {key: None})

    def commit_replace(self, path: Path, updated: dict[Path, _Resolution] | None) -> None:
        if updated is None:
            return
        key = self.key(path)
        self.links.pop(key, None)
        self._forget(key)
        for other, resolution in updated.items():
            self._record(other, resolution)


# ----------------------------------------------------------------------------- files


class FileWriter:
    """A file being written beside its final name (an :class:`AtomicFile`), then published."""

    def __init__(
        self,
        member: Member,
        final: str,
        parts: Path,
        guard_update: dict[Path, _Resolution] | None,
    ) -> None:
        self.member = member
        self.final = final
        self.parts = parts
        self.guard_update = guard_update  # a symlink replaced by this file: see LinkGuard
        folder, name = os.path.split(final)
        # AtomicFile's temporary name embeds the final one: a long name goes through a short one.
        self._via = (
            os.path.join(folder, f".atartape-{secrets.token_hex(8)}")
            if len(os.fsencode(name)) > _LONG_NAME
            else None
        )
        with _member_errors(member):
            self.atomic = AtomicFile(self._via or final, mode=0o600)

    def write(self, data: bytes) -> None:
        with _member_errors(self.member):
            self.atomic.write(data)

    def write_at(self, pieces: list[tuple[int, bytes]]) -> None:
        """Write each ``(offset, data)`` at its offset (a sparse file's regions)."""
        with _member_errors(self.member):
            for offset, data in pieces:
                view = memoryview(data)
                while view:
                    done = os.pwrite(self.atomic.fd, view, offset)
                    view, offset = view[done:], offset + done

    def publish(self, mode: int, mtime: float, size: int | None = None) -> str:
        """Set the size (a sparse file's trailing hole), mode and mtime; move into place."""
        with _member_errors(self.member):
            if size is not None:
                os.ftruncate(self.atomic.fd, size)
            self.atomic.publish(mode=file_mode(mode), mtime=mtime, durable=False)
            if self._via is not None:
                os.replace(self._via, self.final)
        return self.final

    def discard(self) -> None:
        """Close and delete the temporary file (after an error or a cancellation)."""
        self.atomic.discard()
        if self._via is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._via)


class Extractor:
    """Writes members into one destination folder, refusing anything unsafe (see the module)."""

    def __init__(self, dest: str) -> None:
        self.dest = dest  # an absolute path with no symlink in it
        self.guard = LinkGuard(dest)
        self._folders: list[tuple[str, int, float]] = []

    @classmethod
    def open(cls, dest: str) -> Extractor:
        """Create ``dest`` if needed; the extractor works on its resolved path."""
        os.makedirs(dest, exist_ok=True)
        return cls(os.path.realpath(dest))

    # ------------------------------------------------------------------ checks

    def _parent(self, member: Member, parts: list[str]) -> str:
        """Create the missing folders above the member, refusing symlinks and non-folders."""
        path = self.dest
        for part in parts[:-1]:
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise _unsafe(member, f"it would be written through the symlink {shown(path)}")
            if not stat.S_ISDIR(st.st_mode):
                raise _unsafe(member, f"{shown(path)} is in the way and is not a folder")
        return path

    def _final(self, member: Member, parts: list[str]) -> tuple[str, bool]:
        """The final path of a non-folder member, once its parent exists and is safe, and
        whether a symlink is there now (it is replaced, never followed)."""
        parent = self._parent(member, parts)
        final = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return final, False
        if stat.S_ISDIR(st.st_mode):
            raise _unsafe(member, f"a folder is in the way at {shown(final)}")
        return final, stat.S_ISLNK(st.st_mode)

    def _temp(self, final: str) -> str:
        return os.path.join(os.path.dirname(final), f".atartape-{secrets.token_hex(8)}.part")

    # ------------------------------------------------------------------ writers

    def begin_file(self, member: Member, parts: list[str]) -> FileWriter:
        """Check the member's path and open a temporary file beside its final name."""
        with _member_errors(member):
            final, over_link = self._final(member, parts)
            update = self.guard.check_replace(member, tuple(parts)) if over_link else None
            return FileWriter(member, final, tuple(parts), update)

    def publish(self, part: FileWriter, mode: int, mtime: float, size: int | None = None) -> str:
        """Move a finished file into place (see :meth:`FileWriter.publish`)."""
        path = part.publish(mode, mtime, size)
        self.guard.commit_replace(part.parts, part.guard_update)
        return path

    def write_file(
        self, member: Member, parts: list[str], data: bytes, mode: int, mtime: float
    ) -> str:
        """Write a whole small file in one call; returns its path."""
        part = self.begin_file(member, parts)
        try:
            part.write(data)
            return self.publish(part, mode, mtime)
        except BaseException:
            part.discard()
            raise

    def make_dir(self, member: Member, parts: list[str], *, defer: bool) -> str:
        """Create a folder (or keep an existing one); its mode and mtime are set now or at
        :meth:`finish` (``defer``), once its content is written.

        A member that names the destination itself (``.``, ``./``) changes nothing: the
        destination is not the archive's to set (its mode, mtime and owner stay as they were).
        """
        if not parts:
            return self.dest
        with _member_errors(member):
            parent = self._parent(member, parts)
            path = os.path.join(parent, parts[-1])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o700)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise _unsafe(member, f"it would be written through the symlink {shown(path)}")
                if not stat.S_ISDIR(st.st_mode):
                    raise _unsafe(member, f"{shown(path)} is in the way and is not a folder")
        self._folders.append((path, member.mode, member.mtime))
        if not defer:
            self.finish()
        return path

    def make_symlink(self, member: Member, parts: list[str], target: str | None = None) -> str:
        """Create a symlink that resolves inside the destination and keeps every other one
        doing so (see the module); returns its path. ``target`` defaults to the member's."""
        target = member.linkname if target is None else target
        with _member_errors(member):
            if "\0" in target:
                raise _unsafe(member, "its link target contains a NUL byte")
            final, _ = self._final(member, parts)
            own, updated = self.guard.check_symlink(member, tuple(parts), target)
            temp = self._temp(final)
            os.symlink(target, temp)
            try:
                _set_mtime(temp, member.mtime, follow=False)
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            self.guard.commit_symlink(tuple(parts), target, own, updated)
        return final

    def link_target(self, member: Member) -> str | None:
        """The path of a hard link's target in the destination, once it is safe: a member
        path reached through folders only (no symlink on the way); ``None`` when a folder on
        the way does not exist or is not one (then the target cannot be there)."""
        target_parts = _split_relative(member, member.linkname, "link target")
        if not target_parts:
            raise _unsafe(member, "its link target is the destination folder itself")
        with _member_errors(member):
            folder = self.dest
            for part in target_parts[:-1]:
                folder = os.path.join(folder, part)
                try:
                    st = os.lstat(folder)
                except (FileNotFoundError, NotADirectoryError):
                    return None
                if stat.S_ISLNK(st.st_mode):
                    raise _unsafe(
                        member, f"its link target {shown(member.linkname)} goes through a symlink"
                    )
                if not stat.S_ISDIR(st.st_mode):
                    return None
        return os.path.join(folder, target_parts[-1])

    def make_hardlink(self, member: Member, parts: list[str]) -> str | None:
        """Link the member to its target, already extracted; ``None`` if the target is absent.

        The target must be a member path inside the destination whose folders are real folders
        (no symlink on the way), and must not be a folder. A target that is a symlink is copied
        as a symlink (under the symlink rules).
        """
        target = self.link_target(member)
        if target is None:
            return None
        with _member_errors(member):
            try:
                st = os.lstat(target)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISDIR(st.st_mode):
                raise _unsafe(member, f"its link target {shown(member.linkname)} is a folder")
            if stat.S_ISLNK(st.st_mode):
                return self.make_symlink(member, parts, os.readlink(target))
            final, over_link = self._final(member, parts)
            if final == target:
                return final
            update = self.guard.check_replace(member, tuple(parts)) if over_link else None
            temp = self._temp(final)
            os.link(target, temp, follow_symlinks=False)
            try:
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            self.guard.commit_replace(tuple(parts), update)
        return final

    def finish(self) -> None:
        """Give the folders made so far their mode and mtime, deepest first."""
        folders, self._folders = self._folders, []
        for path, mode, mtime in sorted(folders, key=lambda f: f[0].count(os.sep), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, dir_mode(mode))
                _set_mtime(path, mtime)
