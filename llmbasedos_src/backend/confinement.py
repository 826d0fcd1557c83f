"""Virtual-root confinement: client paths name files inside one host directory, and nothing else.

A virtual path is POSIX-like and always relative to the root: "/a/b" and "a/b" both mean <root>/a/b.
`..` is resolved lexically on the virtual path (a "/a/.." is "/", a "/.." is an error), so the kernel is
never asked to climb out of anything.

Resolution walks the path one component at a time with directory file descriptors, opening every component
with O_NOFOLLOW. When a component is a symlink its target is read and, if it stays inside the root, spliced
into the virtual path and the walk starts again from the root; a target outside the root is refused. Every
operation then acts on (directory fd, final name) with the *at() system calls and O_NOFOLLOW, so a symlink
swapped in after the check is never followed by the kernel: the swap is either caught (ELOOP) or acts on the
link itself, inside the root.

The walk starts from a descriptor of the root held open for the life of the VirtualRoot (opening the root
again for every lookup was a third of the cost of a stat). Once a second at most, the held descriptor is
checked against the root path: a root directory that was replaced (moved away, made again) is picked up
then. Replaced descriptors stay open until `close()`, since another thread may still be walking from one.

Error messages carry virtual paths only; host paths stay in this module.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import posixpath
import shutil
import stat as stat_mod
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbasedos.backend.special_files import open_at
from llmbasedos.protocol.errors import (
    Conflict,
    Forbidden,
    InvalidParams,
    NotFound,
    PathOutsideRoot,
    RPCError,
    from_oserror,
)

__all__ = ["VirtualRoot", "Located", "MAX_SYMLINK_HOPS", "MAX_PATH_BYTES", "MAX_NAME_BYTES"]

MAX_SYMLINK_HOPS = 40  # as Linux's own limit
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255

_O_PATH = getattr(os, "O_PATH", os.O_RDONLY)
_O_DIR = _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RETRIES = 8  # walks restarted when a component changes under us
_ROOT_RECHECK_S = 1.0  # how stale the held root descriptor may be after the root directory was replaced


@dataclass(slots=True)  # not frozen: built once per path lookup, and frozen ones cost three times as much
class Located:
    """Where a virtual path lands: an open fd of its parent directory and the final name inside it.

    `name` is "." for the root itself. `vpath` is canonical with every symlink before the final name resolved
    (and the final one too when the lookup followed it).
    """

    dir_fd: int
    name: str
    vpath: str
    st: os.stat_result | None = None  # lstat of the final name, when the walk already made it
    owns_fd: bool = True  # False when dir_fd is the VirtualRoot's own root descriptor (never closed here)

    @property
    def is_root(self) -> bool:
        return self.vpath == "/"


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _check_name(name: str, vpath: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise InvalidParams(f"A path component is longer than {MAX_NAME_BYTES} bytes: {_short(vpath)}")


def _short(vpath: str, limit: int = 200) -> str:
    return vpath if len(vpath) <= limit else vpath[: limit - 3] + "..."


@functools.lru_cache(maxsize=1024)
def _normalize(vpath: str) -> str:
    # Pure and lexical, so cached: clients name the same few paths again and again. Invalid paths raise, and
    # exceptions are never cached.
    if vpath == "":
        raise InvalidParams("A path must not be empty")
    if "\0" in vpath:
        raise InvalidParams("A path must not contain NUL bytes")
    if vpath.isascii():
        size = len(vpath)
    else:
        try:
            size = len(vpath.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidParams("A path must be valid Unicode text") from None
    if size > MAX_PATH_BYTES:
        raise InvalidParams(f"A path must be at most {MAX_PATH_BYTES} bytes")
    parts: list[str] = []
    for part in vpath.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathOutsideRoot(f"Path is outside the virtual root: {_short(vpath)}")
            parts.pop()
            continue
        if len(part) > MAX_NAME_BYTES // 4:  # only then can it be over MAX_NAME_BYTES in UTF-8
            _check_name(part, vpath)
        parts.append(part)
    return "/" + "/".join(parts)


class _Locating:
    """The context manager `VirtualRoot.locate` returns (a class: a generator-based one cost more than the
    walk of a short path)."""

    __slots__ = ("loc",)

    def __init__(self, loc: Located) -> None:
        self.loc = loc

    def __enter__(self) -> Located:
        return self.loc

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.loc.owns_fd:
            os.close(self.loc.dir_fd)
        if isinstance(exc, OSError):
            raise VirtualRoot.error(exc, self.loc.vpath) from None


class VirtualRoot:
    """Confines virtual paths to the host directory `root` (created if it does not exist)."""

    def __init__(self, root: Path | str, *, create: bool = True) -> None:
        host = Path(root).expanduser()
        if create:
            host.mkdir(parents=True, exist_ok=True)
        # The configured root itself is trusted: resolve it once so host-path checks compare like with like.
        self.root = host.resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "The virtual root is not a directory")
        self._root_str = str(self.root)
        self._root_fd = self._open_root()
        st = os.fstat(self._root_fd)
        self._root_id = (st.st_dev, st.st_ino)
        self._root_checked = time.monotonic()
        self._root_lock = threading.Lock()
        self._fds = [self._root_fd]  # every root descriptor ever opened, closed together
        self._closer = weakref.finalize(self, _close_all, self._fds)

    def close(self) -> None:
        """Close the held root descriptor(s). Lookups after this fail (EBADF), never reach a reused number."""
        with self._root_lock:
            self._root_fd = -1
            self._root_checked = float("inf")
            self._closer()

    # -- pure path handling -------------------------------------------------------------------------------

    def normalize(self, vpath: Any) -> str:
        """The canonical virtual path of `vpath` (lexical only: symlinks are not looked at)."""
        if not isinstance(vpath, str):
            raise InvalidParams(f"A path must be a string, not {type(vpath).__name__}")
        return _normalize(vpath)

    def to_virtual(self, host: Path | str) -> str:
        """The virtual path of a host path under the root. Raises PathOutsideRoot for anything else."""
        text = os.path.normpath(os.path.abspath(os.fspath(host)))
        rel = self._relative(text)
        if rel is None:
            with contextlib.suppress(OSError, RuntimeError):
                rel = self._relative(str(Path(text).resolve()))
        if rel is None:
            raise PathOutsideRoot("Path is outside the virtual root")
        return "/" + rel if rel else "/"

    def _relative(self, host: str) -> str | None:
        if host == self._root_str:
            return ""
        prefix = self._root_str.rstrip("/") + "/"
        if host.startswith(prefix):
            return host[len(prefix):]
        return None

    def host_path(self, vpath: str) -> Path:
        """The host path of a canonical virtual path, without any check (for handing to other programs)."""
        return self.root / vpath.lstrip("/") if vpath != "/" else self.root

    # -- resolution -----------------------------------------------------------------------------------------

    def _open_root(self) -> int:
        return os.open(self._root_str, _O_DIR & ~os.O_NOFOLLOW)

    def _root(self) -> int:
        """The root descriptor to walk from; at most once a second, check it is still the root path's."""
        if time.monotonic() - self._root_checked < _ROOT_RECHECK_S:
            return self._root_fd
        with self._root_lock:
            if time.monotonic() - self._root_checked >= _ROOT_RECHECK_S:
                st = os.stat(self._root_str)  # raises as the open of a vanished root did
                if (st.st_dev, st.st_ino) != self._root_id:
                    fd = self._open_root()
                    st = os.fstat(fd)
                    self._fds.append(fd)
                    self._root_fd, self._root_id = fd, (st.st_dev, st.st_ino)
                self._root_checked = time.monotonic()
            return self._root_fd

    def _link_target_vpath(self, dir_vpath: str, target: str, shown: str) -> str:
        """Splice a symlink's target into virtual-path space, refusing targets outside the root."""
        if target.startswith("/"):
            rel = self._relative(os.path.normpath(target))
            if rel is None:
                raise PathOutsideRoot(f"Path is outside the virtual root (symlink): {_short(shown)}")
            return "/" + rel
        joined = posixpath.join(dir_vpath, target)
        try:
            return self.normalize(joined)
        except PathOutsideRoot:
            raise PathOutsideRoot(f"Path is outside the virtual root (symlink): {_short(shown)}") from None

    def _walk(self, vpath: str, follow_last: bool) -> Located:
        """Resolve `vpath` (already canonical) to (parent fd, final name). The caller owns the fd."""
        hops = 0
        restarts = 0
        pending = vpath
        while True:
            parts = pending.split("/")[1:] if pending != "/" else []
            root = fd = self._root()
            try:
                if not parts:
                    return Located(fd, ".", "/", None, False)
                restart_with: str | None = None
                last_index = len(parts) - 1
                for i, name in enumerate(parts):
                    if i == last_index:
                        if not follow_last:
                            return Located(fd, name, pending, None, fd != root)
                        try:
                            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        except FileNotFoundError:
                            return Located(fd, name, pending, None, fd != root)
                        if not stat_mod.S_ISLNK(st.st_mode):
                            return Located(fd, name, pending, st, fd != root)
                    else:
                        try:
                            # O_NOFOLLOW|O_DIRECTORY: a symlink (even one swapped in just now) is never followed.
                            nfd = os.open(name, _O_DIR, dir_fd=fd)
                        except FileNotFoundError:
                            raise NotFound(f"No such file or directory: {_short(vpath)}") from None
                        except OSError as exc:
                            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                                raise
                            try:
                                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                            except FileNotFoundError:
                                raise NotFound(f"No such file or directory: {_short(vpath)}") from None
                            if not stat_mod.S_ISLNK(st.st_mode):
                                if stat_mod.S_ISDIR(st.st_mode):
                                    restart_with = pending  # it became a directory meanwhile: look again
                                    restarts += 1
                                    break
                                shown = "/" + "/".join(parts[: i + 1])
                                raise Conflict(f"Not a directory: {_short(shown)}") from None
                        else:
                            if fd != root:
                                os.close(fd)
                            fd = nfd
                            continue
                    # `name` is a symlink: splice its target into the path and walk again from the root.
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise InvalidParams(f"Too many levels of symbolic links: {_short(vpath)}")
                    try:
                        target = os.readlink(name, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno not in (errno.EINVAL, errno.ENOENT):
                            raise
                        restart_with = pending  # it changed under us: look again
                        restarts += 1
                        break
                    here = "/" + "/".join(parts[:i])
                    new = self._link_target_vpath(here, target, vpath)
                    rest = "/".join(parts[i + 1:])
                    restart_with = self.normalize(new.rstrip("/") + "/" + rest) if rest else new
                    break
                if restart_with is None:  # pragma: no cover - the loop always returns or breaks
                    raise AssertionError("unreachable")
                if restarts > _RETRIES:
                    raise Conflict(f"Path keeps changing while it is resolved: {_short(vpath)}")
                pending = restart_with
                if fd != root:
                    os.close(fd)
            except BaseException:
                if fd != root:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                raise

    def stat_with_path(self, vpath: Any, *, follow_symlinks: bool = True) -> tuple[str, os.stat_result]:
        """(canonical virtual path, lstat result) of what `vpath` names; the result of a followed final symlink.

        The straight case — no symlink on the way — is walked here in a few lines: a stat is the call clients
        make most, and `locate`'s general walk cost as much as the system calls themselves. Anything else (a
        symlink, a missing directory, an error to word) takes `locate`, which has the final say.
        """
        canonical = self.normalize(vpath)
        parent, _, name = canonical.rpartition("/")
        if name:
            root = self._root()
            fd = root
            try:
                if parent:
                    for part in parent[1:].split("/"):
                        nfd = os.open(part, _O_DIR, dir_fd=fd)  # never follows a symlink, even a new one
                        if fd != root:
                            os.close(fd)
                        fd = nfd
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                st = None
            finally:
                if fd != root:
                    os.close(fd)
            if st is not None and not stat_mod.S_ISLNK(st.st_mode):
                return canonical, st
        with self.locate(canonical, follow_last=follow_symlinks) as loc:
            st = loc.st
            if st is None:
                try:
                    st = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise NotFound(f"No such file or directory: {_short(loc.vpath)}") from None
            return loc.vpath, st

    def locate(self, vpath: Any, *, follow_last: bool = True) -> _Locating:
        """Resolve `vpath`; `with` it to get where it lands. The parent fd is closed on leaving the block.

        OSErrors raised inside the block are translated to RPCErrors that name the virtual path.
        """
        canonical = self.normalize(vpath)
        try:
            return _Locating(self._walk(canonical, follow_last))
        except OSError as exc:
            raise self.error(exc, canonical) from None

    @staticmethod
    def error(exc: OSError, vpath: str) -> RPCError:
        if exc.errno == errno.ELOOP:
            # O_NOFOLLOW met a symlink that appeared after the check.
            return Conflict(f"Path changed while in use (symlink appeared): {_short(vpath)}")
        return from_oserror(exc, _short(vpath))

    def resolve(self, vpath: Any, *, must_exist: bool = False) -> Path:
        """The host path `vpath` names, every symlink resolved and checked to stay inside the root."""
        with self.locate(vpath) as loc:
            if must_exist and not loc.is_root:
                try:
                    os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise NotFound(f"No such file or directory: {_short(loc.vpath)}") from None
            return self.host_path(loc.vpath)

    def resolve_virtual(self, vpath: Any, *, follow_last: bool = True) -> str:
        """Canonical virtual path with symlinks resolved (inside the root)."""
        with self.locate(vpath, follow_last=follow_last) as loc:
            return loc.vpath

    # -- file-descriptor operations (all TOCTOU-safe) ---------------------------------------------------

    def open_file(self, vpath: Any, flags: int, mode: int = 0o644, *,
                  directory_ok: bool = False) -> tuple[int, str, os.stat_result]:
        """os.open() of `vpath` inside the root: (fd, canonical virtual path, fstat of the fd).

        Symlinks inside the root are followed, none outside. Only a regular file (or a directory, when
        `directory_ok`) is ever opened, and without blocking: see `special_files`.
        """
        for _ in range(_RETRIES):
            with self.locate(vpath) as loc:
                try:
                    fd, st = open_at(loc.dir_fd, loc.name, flags, loc.vpath, mode=mode, st=loc.st,
                                     directory_ok=directory_ok)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                else:
                    return fd, loc.vpath, st
            # ELOOP: a symlink was swapped in after the walk; walk again and follow it only if it stays inside.
        raise Conflict(f"Path keeps changing while it is opened: {_short(self.normalize(vpath))}")

    def open_fd(self, vpath: Any, flags: int, mode: int = 0o644) -> int:
        """`open_file`'s fd alone; a directory only with O_DIRECTORY in `flags`."""
        return self.open_file(vpath, flags, mode, directory_ok=bool(flags & os.O_DIRECTORY))[0]

    def open_dir(self, vpath: Any) -> int:
        """A readable fd of the directory `vpath` (for os.scandir / fd-based walks)."""
        return self.open_fd(vpath, os.O_RDONLY | os.O_DIRECTORY)

    def stat(self, vpath: Any, *, follow_symlinks: bool = True) -> os.stat_result:
        return self.stat_with_path(vpath, follow_symlinks=follow_symlinks)[1]

    def exists(self, vpath: Any) -> bool:
        try:
            self.stat(vpath, follow_symlinks=False)
        except NotFound:
            return False
        return True

    def readlink(self, vpath: Any) -> str | None:
        """The virtual path a symlink points at, or None when its target is outside the root."""
        with self.locate(vpath, follow_last=False) as loc:
            target = os.readlink(loc.name, dir_fd=loc.dir_fd)
            try:
                return self._link_target_vpath(posixpath.dirname(loc.vpath), target, loc.vpath)
            except (PathOutsideRoot, InvalidParams):
                return None

    def mkdir(self, vpath: Any, *, parents: bool = False, exist_ok: bool = False, mode: int = 0o755) -> bool:
        """Create a directory; returns False when it already existed (and exist_ok)."""
        canonical = self.normalize(vpath)
        if parents and canonical != "/":
            parent = posixpath.dirname(canonical)
            if parent != "/":
                self.mkdir(parent, parents=True, exist_ok=True, mode=mode)
        with self.locate(canonical) as loc:
            try:
                os.mkdir(loc.name, mode, dir_fd=loc.dir_fd)
            except FileExistsError:
                st = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
                if exist_ok and stat_mod.S_ISDIR(st.st_mode):
                    return False
                if exist_ok:
                    raise Conflict(f"Exists and is not a directory: {_short(loc.vpath)}") from None
                raise
            return True

    def unlink(self, vpath: Any) -> None:
        """Remove a file or a symlink (the link itself, never its target)."""
        with self.locate(vpath, follow_last=False) as loc:
            os.unlink(loc.name, dir_fd=loc.dir_fd)

    def rmdir(self, vpath: Any) -> None:
        with self.locate(vpath, follow_last=False) as loc:
            if loc.is_root:
                raise Forbidden("The virtual root itself cannot be removed")
            os.rmdir(loc.name, dir_fd=loc.dir_fd)

    def rmtree(self, vpath: Any) -> None:
        """Remove a directory tree without ever following a symlink (shutil's fd-based walk)."""
        with self.locate(vpath, follow_last=False) as loc:
            if loc.is_root:
                raise Forbidden("The virtual root itself cannot be removed")
            st = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
            if not stat_mod.S_ISDIR(st.st_mode):
                raise Conflict(f"Not a directory: {_short(loc.vpath)}")
            shutil.rmtree(loc.name, dir_fd=loc.dir_fd)

    def rename(self, src: Any, dst: Any) -> None:
        """Rename `src` (the entry itself, a symlink is moved as a link) to `dst`, replacing a file there."""
        with self.locate(src, follow_last=False) as s, self.locate(dst, follow_last=False) as d:
            os.rename(s.name, d.name, src_dir_fd=s.dir_fd, dst_dir_fd=d.dir_fd)
