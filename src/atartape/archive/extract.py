"""Safe extraction: the checks and the disk writes behind ``Archive.extract``.

:func:`member_parts` is pure. Every method of :class:`Extractor` touches the disk and is meant
to run in a worker thread (``anyio.to_thread.run_sync``), one call at a time.

The policy, applied to every member before anything of it is written:

- its name must be relative, without ``..`` components or NUL bytes;
- device files and FIFOs are refused;
- no existing component of its parent path in the destination may be a symlink (no write
  through a symlink) or anything but a folder;
- a symlink's target must stay inside the destination, read both as written and as resolved
  (``realpath``); a hard link's target must name a member path inside the destination, reached
  through folders only.

A refusal raises :class:`UnsafeMemberError` naming the member. Files are written to a temporary
name (``.atartape-<random>.part``) in their final folder and renamed into place once complete, so
an interrupted extraction never leaves a partial file under a real name. Files and links get the
member's permission bits (without setuid, setgid and sticky bits) and mtime; folders get theirs
when :meth:`Extractor.finish` runs, after their content is written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

from ..errors import ArchiveFormatError, UnsafeMemberError
from ..format.members import Member, MemberType

_REFUSED_TYPES = {
    MemberType.CHAR_DEVICE: "a character device",
    MemberType.BLOCK_DEVICE: "a block device",
    MemberType.FIFO: "a FIFO",
}
_MODE_BITS = 0o777  # setuid, setgid and sticky bits are dropped
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS |= getattr(os, "O_BINARY", 0)


def _unsafe(member: Member, why: str) -> UnsafeMemberError:
    return UnsafeMemberError(f"refusing to extract {member.name!r}: {why}", member=member.name)


def _split_relative(member: Member, path: str, what: str) -> list[str]:
    """The components of a relative archive path; refuses absolute paths, ``..`` and NUL."""
    if "\0" in path:
        raise _unsafe(member, f"its {what} contains a NUL byte")
    if path.startswith("/") or os.path.isabs(path):
        raise _unsafe(member, f"its {what} {path!r} is absolute")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise _unsafe(member, f"its {what} {path!r} has a '..' component")
        if os.sep in part or (os.altsep and os.altsep in part):
            raise _unsafe(member, f"its {what} {path!r} has a path separator of this OS")
    return parts


def member_parts(member: Member) -> list[str]:
    """The path components of ``member`` inside the destination, once its name and type are safe.

    Raises :class:`UnsafeMemberError` for an absolute name, a ``..`` component, a NUL byte, a
    device file or FIFO, an empty symlink target, and a name that designates the destination
    itself (unless the member is a folder: then ``[]``). Raises :class:`ArchiveFormatError` for
    a GNU sparse member, which is not supported.
    """
    if member.type in _REFUSED_TYPES:
        raise _unsafe(member, f"it is {_REFUSED_TYPES[member.type]}")
    if member.type is MemberType.SPARSE:
        raise ArchiveFormatError(
            f"{member.name!r} is a GNU sparse file, which this reader does not extract",
            offset=member.header_offset,
        )
    parts = _split_relative(member, member.name, "name")
    if not parts and member.type is not MemberType.DIRECTORY:
        raise _unsafe(member, "its name designates the destination folder itself")
    if member.type is MemberType.SYMLINK and not member.linkname:
        raise _unsafe(member, "it is a symlink with an empty target")
    return parts


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _set_mtime(path: str, mtime: float, *, follow: bool = True) -> None:
    if not follow and os.utime not in os.supports_follow_symlinks:
        return
    with contextlib.suppress(OverflowError, ValueError):
        os.utime(path, (mtime, mtime), follow_symlinks=follow)


class PartFile:
    """A file being written under a temporary name; :meth:`commit` renames it into place."""

    def __init__(self, fd: int, temp: str, final: str) -> None:
        self.fd = fd
        self.temp = temp
        self.final = final

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def commit(self, mode: int, mtime: float) -> str:
        """Set mode and mtime, close and rename onto the final name (atomic; never follows)."""
        fd, self.fd = self.fd, -1
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode & _MODE_BITS)
        finally:
            os.close(fd)
        if not hasattr(os, "fchmod"):  # pragma: no cover - Windows
            os.chmod(self.temp, mode & _MODE_BITS)
        _set_mtime(self.temp, mtime)
        os.replace(self.temp, self.final)
        return self.final

    def discard(self) -> None:
        """Close and delete the temporary file (after an error or a cancellation)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)


class Extractor:
    """Writes members into one destination folder, refusing anything unsafe (see the module)."""

    def __init__(self, dest: str) -> None:
        self.dest = dest  # an absolute path with no symlink in it
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
                os.mkdir(path)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise _unsafe(member, f"it would be written through the symlink {path!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise _unsafe(member, f"{path!r} is in the way and is not a folder")
        return path

    def _final(self, member: Member, parts: list[str]) -> str:
        """The final path of a non-folder member, once its parent exists and is safe."""
        parent = self._parent(member, parts)
        final = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            return final
        if stat.S_ISDIR(st.st_mode):
            raise _unsafe(member, f"a folder is in the way at {final!r}")
        return final  # an existing file or symlink is replaced by the rename, never followed

    def _temp(self, final: str) -> str:
        return os.path.join(os.path.dirname(final), f".atartape-{secrets.token_hex(8)}.part")

    # ------------------------------------------------------------------ writers

    def begin_file(self, member: Member, parts: list[str]) -> PartFile:
        """Check the member's path and open a temporary file beside its final name."""
        final = self._final(member, parts)
        temp = self._temp(final)
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
        return PartFile(fd, temp, final)

    def write_file(
        self, member: Member, parts: list[str], data: bytes, mode: int, mtime: float
    ) -> str:
        """Write a whole small file in one call; returns its path."""
        part = self.begin_file(member, parts)
        try:
            part.write(data)
            return part.commit(mode, mtime)
        except BaseException:
            part.discard()
            raise

    def make_dir(self, member: Member, parts: list[str], *, defer: bool) -> str:
        """Create a folder (or keep an existing one); its mode and mtime are set now or at
        :meth:`finish` (``defer``), once its content is written."""
        if not parts:
            return self.dest
        parent = self._parent(member, parts)
        path = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o700)
        else:
            if stat.S_ISLNK(st.st_mode):
                raise _unsafe(member, f"it would be written through the symlink {path!r}")
            if not stat.S_ISDIR(st.st_mode):
                raise _unsafe(member, f"{path!r} is in the way and is not a folder")
        self._folders.append((path, member.mode, member.mtime))
        if not defer:
            self.finish()
        return path

    def make_symlink(self, member: Member, parts: list[str]) -> str:
        """Create a symlink whose target stays inside the destination; returns its path."""
        target = member.linkname
        if target.startswith("/") or os.path.isabs(target):
            raise _unsafe(member, f"its target {target!r} is absolute")
        depth = len(parts) - 1
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise _unsafe(member, f"its target {target!r} points outside the destination")
            elif part not in ("", "."):
                depth += 1
        final = self._final(member, parts)
        resolved = os.path.realpath(os.path.join(os.path.dirname(final), target))
        if not _inside(resolved, self.dest):
            raise _unsafe(member, f"its target {target!r} resolves outside the destination")
        temp = self._temp(final)
        os.symlink(target, temp)
        try:
            _set_mtime(temp, member.mtime, follow=False)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return final

    def make_hardlink(self, member: Member, parts: list[str]) -> str | None:
        """Link the member to its target, already extracted; ``None`` if the target is absent.

        The target must be a member path inside the destination whose folders are real folders
        (no symlink on the way), and must not be a folder.
        """
        target_parts = _split_relative(member, member.linkname, "link target")
        if not target_parts:
            raise _unsafe(member, "its link target is the destination folder itself")
        target = os.path.join(self.dest, *target_parts)
        folder = os.path.dirname(target)
        if os.path.realpath(folder) != folder:
            raise _unsafe(member, f"its link target {member.linkname!r} goes through a symlink")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            raise _unsafe(member, f"its link target {member.linkname!r} is a folder")
        final = self._final(member, parts)
        if final == target:
            return final
        temp = self._temp(final)
        os.link(target, temp, follow_symlinks=False)
        try:
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        return final

    def finish(self) -> None:
        """Give the folders made so far their mode and mtime, deepest first."""
        folders, self._folders = self._folders, []
        for path, mode, mtime in sorted(folders, key=lambda f: f[0].count(os.sep), reverse=True):
            os.chmod(path, mode & _MODE_BITS)
            _set_mtime(path, mtime)
