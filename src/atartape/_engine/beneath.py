"""Opening paths beneath a folder without following a symlink in any component (synchronous).

A :class:`Beneath` holds one handle on a folder (a play's, a verification's or a recording's
source) and opens relative paths beneath it. No component of the path is ever a symlink that gets
followed: a folder of the tape swapped for a symlink to somewhere else (``share/d`` ->
``/etc``) makes every open below it fail with :class:`NotBeneathError`, whatever the window
(an offset, a range, a part, a resume) and however it races, because the kernel resolves the
whole path from the handle in one call:

- on Linux 5.6 and later, ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)`` (syscall 437, called through :mod:`ctypes`): one system call per
  path, whatever its depth;
- elsewhere, or where a seccomp filter refuses ``openat2`` (probed once per process), component by
  component: ``openat(..., O_NOFOLLOW | O_DIRECTORY)`` from the handle, closing each folder as
  soon as the next one is open.

A path with an empty, ``.`` or ``..`` component, a leading ``/`` or a NUL byte is refused with
:class:`UnsafePathError` before the disk is touched: the index validates its rows too, but this
layer trusts no caller. The recorded folder itself is ``b""``.

Every function here runs in a worker thread. Descriptors are closed before a function returns
(or raises), except the one :meth:`Beneath.open` returns, which the caller owns.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import stat
import sys
import threading
from collections.abc import Iterator

__all__ = ["Beneath", "NotBeneathError", "UnsafePathError", "check_relative", "use_openat2"]

_O_PATH = getattr(os, "O_PATH", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# A folder passed through: O_PATH (Linux) needs no read permission, as the kernel's own walk.
_PASS_FLAGS = (_O_PATH or os.O_RDONLY) | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
LIST_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
"""Flags that open a folder for listing it (``os.scandir(fd)``), never a symlink."""

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
# openat2 has number 437 in the unified syscall table of every architecture listed here; the
# others (alpha, ia64, mips) number it differently, and guessing would call another syscall.
_SYS_OPENAT2 = 437
_UNIFIED_TABLE = {
    "x86_64",
    "amd64",
    "i386",
    "i686",
    "aarch64",
    "arm64",
    "armv6l",
    "armv7l",
    "armv8l",
    "riscv64",
    "ppc64",
    "ppc64le",
    "s390x",
    "loongarch64",
}
# Set (to anything) to walk component by component even where openat2 works: for tests only.
_WALK_ENV = "_ATARTAPE_BENEATH_WALK"


class UnsafePathError(ValueError):
    """A relative path that could leave its folder or name it ambiguously (``..``, ``.``, an
    empty component, a leading ``/``, a NUL byte). Callers turn it into an error of their own
    that names the row it came from."""


class NotBeneathError(OSError):
    """A folder on the path is a symlink (or leads out of the folder): nothing was opened."""

    def __init__(self, rel: bytes) -> None:
        super().__init__(errno.ELOOP, "a folder on its path is a symlink", os.fsdecode(rel))


class _OpenHow(ctypes.Structure):
    _fields_ = [  # the ctypes layout of struct open_how
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


class _Openat2:
    """``openat2`` through libc's ``syscall``; releases the GIL like any ctypes call."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syscall
        call.restype = ctypes.c_long
        call.argtypes = [
            ctypes.c_long,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.POINTER(_OpenHow),
            ctypes.c_size_t,
        ]
        self._call = call
        self._hows: dict[int, _OpenHow] = {}
        self._lock = threading.Lock()

    def _how(self, flags: int) -> _OpenHow:
        how = self._hows.get(flags)
        if how is None:
            with self._lock:
                how = self._hows.setdefault(flags, _OpenHow(flags, 0, _RESOLVE))
        return how

    def __call__(self, dir_fd: int, rel: bytes, flags: int) -> int:
        how = self._how(flags)
        while True:
            fd = int(self._call(_SYS_OPENAT2, dir_fd, rel, ctypes.byref(how), ctypes.sizeof(how)))
            if fd >= 0:
                return fd
            code = ctypes.get_errno()
            if code in (errno.EINTR, errno.EAGAIN):  # EAGAIN: a rename raced the walk; again
                continue
            raise OSError(code, os.strerror(code), os.fsdecode(rel))


_probed = False
_openat2: _Openat2 | None = None
_probe_lock = threading.Lock()


def use_openat2(enabled: bool | None = None) -> bool:
    """Whether paths are resolved by ``openat2`` (probed once); ``enabled=False`` forces the
    walk component by component, ``True`` probes again (tests use both)."""
    global _probed, _openat2
    with _probe_lock:
        if enabled is not None:
            _probed, _openat2 = bool(not enabled), None
        if not _probed:
            _probed = True
            _openat2 = _probe()
        return _openat2 is not None


def _probe() -> _Openat2 | None:
    if not sys.platform.startswith("linux") or os.environ.get(_WALK_ENV):
        return None
    if platform.machine().lower() not in _UNIFIED_TABLE or ctypes.sizeof(ctypes.c_void_p) < 8:
        return None  # a 32-bit process on a 64-bit kernel might be x32: do not guess
    try:
        call = _Openat2()
        fd = call(-100, b".", _PASS_FLAGS)  # AT_FDCWD
    except (OSError, AttributeError):  # ENOSYS (old kernel), EPERM (seccomp), E2BIG, EINVAL
        return None
    os.close(fd)
    return call


def check_relative(rel: bytes) -> None:
    """Raise :class:`UnsafePathError` unless ``rel`` is ``b""`` or a clean relative path."""
    if not rel:
        return
    if b"\0" in rel or rel.startswith(b"/"):
        raise UnsafePathError(f"{rel!r} is not a relative path without NUL bytes")
    for part in rel.split(b"/"):
        if part in (b"", b".", b".."):
            raise UnsafePathError(f"{rel!r} has a component {part!r}: it is not a clean path")


class Beneath:
    """One handle on the folder ``root`` (opened at once, following what ``root`` itself names),
    and the paths beneath it, opened without following symlinks.

    Raises :class:`OSError` when ``root`` cannot be opened as a folder. Thread-safe: worker
    threads may use one instance at once; :meth:`close` closes the handle when the last
    :meth:`hold` is released, so a thread still opening a path never meets a reused descriptor.
    """

    def __init__(self, root: str | bytes) -> None:
        self.root = os.fsdecode(root)
        self.fd = os.open(root, _PASS_FLAGS & ~_O_NOFOLLOW)
        self._users = 1
        self._lock = threading.Lock()
        self._openat2 = _openat2 if use_openat2() else None

    # ------------------------------------------------------------------ lifetime

    def hold(self) -> None:
        """One more user of the handle (released by :meth:`release`)."""
        with self._lock:
            if self._users <= 0:
                raise ValueError(f"the handle on {self.root!r} is closed")
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            os.close(self.fd)

    def close(self) -> None:
        """Give up this owner's use of the handle (idempotent per owner is the caller's job)."""
        self.release()

    def __enter__(self) -> Beneath:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ opening

    def open(self, rel: bytes, flags: int) -> int:
        """``rel`` opened with ``flags`` (add ``O_NOFOLLOW`` to refuse a symlink as the last
        component; ``b""`` opens the folder itself). Raises :class:`UnsafePathError`,
        :class:`NotBeneathError` when a folder on the path is a symlink, or the
        :class:`OSError` of the open."""
        check_relative(rel)
        if not rel:
            return os.open(".", flags, dir_fd=self.fd)
        if flags & _O_DIRECTORY:
            return self._open_folder(rel, flags)
        call = self._openat2
        if call is not None:
            try:
                return call(self.fd, rel, flags)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EXDEV):
                    raise self._why_not(rel, exc) from None
                raise
        folder, name = rel.rpartition(b"/")[::2]
        with self._folder(folder) as dir_fd:
            return os.open(name, flags, dir_fd=dir_fd)

    @contextlib.contextmanager
    def parent(self, rel: bytes) -> Iterator[tuple[int, bytes]]:
        """The folder holding ``rel`` (a descriptor, closed on exit) and ``rel``'s name in it,
        for the ``*at`` calls (``os.stat(name, dir_fd=..., follow_symlinks=False)``). For
        ``b""``, the folder itself and ``"."``. Raises as :meth:`open` does."""
        check_relative(rel)
        if not rel:
            yield self.fd, b"."
            return
        folder, name = rel.rpartition(b"/")[::2]
        with self._folder(folder) as dir_fd:
            yield dir_fd, name

    def lstat(self, rel: bytes) -> os.stat_result:
        """The status of ``rel`` itself (a symlink is not followed). Raises as :meth:`open`."""
        with self.parent(rel) as (dir_fd, name):
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)

    def listdir(self, rel: bytes) -> list[bytes]:
        """The names in the folder ``rel`` (a symlink there is refused). Raises as
        :meth:`open`."""
        fd = self.open(rel, LIST_FLAGS)
        try:
            return [os.fsencode(name) for name in os.listdir(fd)]
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _folder(self, rel: bytes) -> Iterator[int]:
        """The folder ``rel`` (beneath the handle, already checked) as a descriptor."""
        if not rel:
            yield self.fd
            return
        fd = self._open_folder(rel)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_folder(self, rel: bytes, flags: int = _PASS_FLAGS) -> int:
        """The folder ``rel`` opened with ``flags``; :class:`NotBeneathError` when it or a
        folder above it is a symlink (with ``O_DIRECTORY``, ``O_NOFOLLOW`` says ENOTDIR)."""
        call = self._openat2
        if call is not None:
            try:  # RESOLVE_NO_SYMLINKS refuses a symlink as the last component too: ELOOP
                return call(self.fd, rel, flags & ~_O_NOFOLLOW)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EXDEV):
                    raise NotBeneathError(rel) from None
                raise
        at = self.fd
        names = rel.split(b"/")
        try:
            for step, name in enumerate(names, 1):
                try:
                    fd = os.open(name, flags if step == len(names) else _PASS_FLAGS, dir_fd=at)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EMLINK) and _is_link(
                        name, at
                    ):
                        raise NotBeneathError(rel) from None
                    raise
                if at != self.fd:
                    os.close(at)
                at = fd
        except BaseException:
            if at != self.fd:
                os.close(at)
            raise
        return at

    def _why_not(self, rel: bytes, exc: OSError) -> OSError:
        """After ``openat2`` refused ``rel`` with ELOOP: is the symlink a folder on its path
        (:class:`NotBeneathError`) or ``rel`` itself (``exc``, as ``O_NOFOLLOW`` says it)?"""
        folder = rel.rpartition(b"/")[0]
        if exc.errno == errno.EXDEV:
            return NotBeneathError(rel)
        if folder:
            try:
                os.close(self._open_folder(folder))
            except NotBeneathError as above:
                return above
            except OSError:
                pass
        return exc


def _is_link(name: bytes, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
