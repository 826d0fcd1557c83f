"""The fs server's file operations, on a VirtualRoot. Blocking: callers run them in a thread pool.

Every function takes virtual paths and returns JSON-ready results whose paths are virtual too. All host access
goes through VirtualRoot's dir-fd helpers, so no symlink is ever followed out of the root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import functools
import mimetypes
import os
import posixpath
import shutil
import stat as stat_mod
from datetime import UTC, datetime
from typing import Any

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.special_files import require_regular
from llmbasedos.protocol.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidParams,
    NotFound,
    PayloadTooLarge,
)
from llmbasedos.servers.fs.tree_copy import CopyCounter, Progress, copy_dir_contents, copy_file, lstat_at, tmp_name

__all__ = [
    "FileOps", "DEFAULT_MAX_READ", "DEFAULT_MAX_WRITE", "entry_type", "iso_time", "guess_mime",
]

DEFAULT_MAX_READ = 10 * 1024 * 1024
DEFAULT_MAX_WRITE = 10 * 1024 * 1024
_CHUNK = 1 << 20

# A few magic numbers, for files whose extension says nothing.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
)


def entry_type(mode: int) -> str:
    if stat_mod.S_ISLNK(mode):
        return "symlink"
    if stat_mod.S_ISDIR(mode):
        return "directory"
    if stat_mod.S_ISREG(mode):
        return "file"
    return "other"


@functools.lru_cache(maxsize=4096)
def iso_time(ts: float) -> str:
    # Cached: a stat answer carries three of these, the same file's times repeat from call to call, and the
    # conversion cost more than all the syscalls of the stat itself.
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def guess_mime(name: str, head: bytes) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if not head:
        return "text/plain"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return "application/octet-stream"
    return "text/plain" if b"\0" not in head else "application/octet-stream"


def _decode_content(content: str, encoding: str, max_bytes: int, vpath: str) -> bytes:
    if encoding == "base64":
        if len(content) // 4 * 3 > max_bytes + 3:
            raise PayloadTooLarge(f"Content exceeds the {max_bytes}-byte write limit: {vpath}")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParams("params.content: not valid base64") from None
    else:
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidParams("params.content: not valid Unicode text") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"Content is {len(data)} bytes, over the {max_bytes}-byte write limit: {vpath}")
    return data


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class FileOps:
    """File operations over one virtual root, with the size caps of this server."""

    def __init__(self, vroot: VirtualRoot, *, max_read: int = DEFAULT_MAX_READ,
                 max_write: int = DEFAULT_MAX_WRITE) -> None:
        self.vroot = vroot
        self.max_read = max_read
        self.max_write = max_write

    # -- describing entries ---------------------------------------------------------------------------------

    def _entry(self, vpath: str, name: str, st: os.stat_result, link_target: str | None = None) -> dict[str, Any]:
        kind = entry_type(st.st_mode)
        entry: dict[str, Any] = {
            "name": name,
            "path": vpath,
            "type": kind,
            "size": -1 if kind == "directory" else st.st_size,
            "modified_at": iso_time(st.st_mtime),
        }
        if kind == "symlink":
            entry["target"] = link_target
        return entry

    def _link_target(self, vpath: str) -> str | None:
        try:
            return self.vroot.readlink(vpath)
        except (NotFound, Conflict, InvalidParams):
            return None

    def list(self, path: str) -> list[dict[str, Any]]:
        fd = self.vroot.open_dir(path)
        base = self.vroot.resolve_virtual(path)
        try:
            entries: list[dict[str, Any]] = []
            with os.scandir(fd) as it:
                for item in it:
                    name = item.name
                    try:
                        name.encode("utf-8")
                    except UnicodeEncodeError:
                        continue  # a host name that is not UTF-8 cannot travel as JSON text
                    vpath = posixpath.join(base, name)
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we listed
                    target = None
                    if stat_mod.S_ISLNK(st.st_mode):
                        target = self._link_target(vpath)
                    entries.append(self._entry(vpath, name, st, target))
        except OSError as exc:
            raise self.vroot.error(exc, base) from None
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e["name"])
        return entries

    def stat(self, path: str, follow_symlinks: bool = True) -> dict[str, Any]:
        vpath, st = self.vroot.stat_with_path(path, follow_symlinks=follow_symlinks)
        # Built in one go rather than through _entry: stat is the call clients make most.
        mode = st.st_mode
        kind = entry_type(mode)
        entry: dict[str, Any] = {
            "name": vpath[vpath.rindex("/") + 1:] or "/",
            "path": vpath,
            "type": kind,
            "size": -1 if kind == "directory" else st.st_size,
            "modified_at": iso_time(st.st_mtime),
            "mode": f"{mode & 0o7777:04o}",
            "accessed_at": iso_time(st.st_atime),
            "changed_at": iso_time(st.st_ctime),
        }
        if kind == "symlink":
            entry["target"] = self._link_target(vpath)
        return entry

    # -- reading and writing ----------------------------------------------------------------------------------

    def read(self, path: str, encoding: str = "text", offset: int = 0, length: int | None = None) -> dict[str, Any]:
        fd, vpath, st = self.vroot.open_file(path, os.O_RDONLY)
        try:
            size = st.st_size
            want = max(0, size - offset) if length is None else length
            if want > self.max_read:
                raise PayloadTooLarge(
                    f"Reading {want} bytes of {vpath} is over the {self.max_read}-byte read limit; "
                    "read it in parts with offset and length")
            chunks: list[bytes] = []
            got = 0
            pos = offset
            # Bounded by `want` even if the file grows while we read it.
            while got < want:
                chunk = os.pread(fd, min(_CHUNK, want - got), pos)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                pos += len(chunk)
            data = b"".join(chunks)
            head = data[:512] if offset == 0 else os.pread(fd, 512, 0)
        except OSError as exc:
            raise self.vroot.error(exc, vpath) from None
        finally:
            os.close(fd)
        if encoding == "base64":
            content = base64.b64encode(data).decode("ascii")
        else:
            try:
                content = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidParams(
                    f"{vpath} is not UTF-8 text at the requested range; read it with encoding 'base64'") from None
        return {
            "path": vpath,
            "content": content,
            "encoding": encoding,
            "mime_type": guess_mime(posixpath.basename(vpath), head),
            "size": size,
            "offset": offset,
            "length": len(data),
        }

    def write(self, path: str, content: str, encoding: str = "text", append: bool = False,
              create_parents: bool = False) -> dict[str, Any]:
        canonical = self.vroot.normalize(path)
        if canonical == "/":
            raise Conflict("Is a directory: /")
        data = _decode_content(content, encoding, self.max_write, canonical)
        parent = posixpath.dirname(canonical)
        if create_parents and parent != "/":
            self.vroot.mkdir(parent, parents=True, exist_ok=True)
        if append:
            return self._append(canonical, data)
        with self.vroot.locate(canonical) as loc:
            mode = 0o644
            try:
                st = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                require_regular(st, loc.vpath)
                mode = stat_mod.S_IMODE(st.st_mode)
            self._atomic_replace(loc.dir_fd, loc.name, data, mode)
            return {"path": loc.vpath, "bytes_written": len(data), "status": "success"}

    def _atomic_replace(self, dir_fd: int, name: str, data: bytes, mode: int) -> None:
        tmp = tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            try:
                _write_all(fd, data)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename() replaces the directory entry itself: a symlink swapped in meanwhile is replaced, not followed.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)  # O_PATH fds refuse fsync on some kernels; the data itself is already synced

    def _append(self, vpath: str, data: bytes) -> dict[str, Any]:
        fd, resolved, _ = self.vroot.open_file(vpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            raise self.vroot.error(exc, resolved) from None
        finally:
            os.close(fd)
        return {"path": resolved, "bytes_written": len(data), "status": "success"}

    # -- directories and tree operations --------------------------------------------------------------------

    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> dict[str, Any]:
        canonical = self.vroot.normalize(path)
        if canonical == "/":
            if exist_ok:
                return {"path": "/", "created": False, "status": "success"}
            raise AlreadyExists("File exists: /")
        created = self.vroot.mkdir(canonical, parents=parents, exist_ok=exist_ok)
        return {"path": self.vroot.resolve_virtual(canonical), "created": created, "status": "success"}

    def delete(self, path: str, recursive: bool = False) -> dict[str, Any]:
        canonical = self.vroot.normalize(path)
        if canonical == "/":
            raise Forbidden("The virtual root itself cannot be deleted")
        with self.vroot.locate(canonical, follow_last=False) as loc:
            vpath = loc.vpath
            try:
                st = os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"No such file or directory: {vpath}") from None
            if stat_mod.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(loc.name, dir_fd=loc.dir_fd)
                else:
                    try:
                        os.rmdir(loc.name, dir_fd=loc.dir_fd)
                    except OSError as exc:
                        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                            raise Conflict(
                                f"Directory not empty: {vpath}; pass recursive=true to delete it") from None
                        raise
            else:
                os.unlink(loc.name, dir_fd=loc.dir_fd)
        return {"path": vpath, "status": "success"}

    @staticmethod
    def _check_tree_target(src: str, dst: str, verb: str) -> None:
        if src == dst:
            raise InvalidParams(f"Source and destination are the same: {src}")
        if src == "/":
            raise Forbidden(f"The virtual root itself cannot be the source of a {verb}")
        if dst == "/":
            raise AlreadyExists("Destination exists: /")
        if dst.startswith(src.rstrip("/") + "/"):
            raise InvalidParams(f"Cannot {verb} {src} into itself ({dst})")

    def move(self, source: str, destination: str, overwrite: bool = False,
             create_parents: bool = False) -> dict[str, Any]:
        src = self.vroot.resolve_virtual(source, follow_last=False)
        dst_c = self.vroot.normalize(destination)
        if create_parents and posixpath.dirname(dst_c) != "/":
            self.vroot.mkdir(posixpath.dirname(dst_c), parents=True, exist_ok=True)
        dst = self.vroot.resolve_virtual(dst_c, follow_last=False)
        self._check_tree_target(src, dst, "move")
        with self.vroot.locate(src, follow_last=False) as s, self.vroot.locate(dst, follow_last=False) as d:
            try:
                os.stat(s.name, dir_fd=s.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"No such file or directory: {src}") from None
            if not overwrite and lstat_at(d.dir_fd, d.name) is not None:
                raise AlreadyExists(f"Destination exists: {dst}; pass overwrite=true to replace it")
            try:
                os.rename(s.name, d.name, src_dir_fd=s.dir_fd, dst_dir_fd=d.dir_fd)
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise Conflict(f"Cannot move across file systems: {src} -> {dst}") from None
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise Conflict(f"Destination is a non-empty directory: {dst}") from None
                if exc.errno in (errno.EISDIR, errno.ENOTDIR):
                    raise Conflict(f"Cannot replace {dst} with an entry of another type") from None
                raise self.vroot.error(exc, dst) from None
        return {"path": dst, "source": src, "status": "success"}

    def copy(self, source: str, destination: str, overwrite: bool = False, create_parents: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
        src = self.vroot.resolve_virtual(source)
        dst_c = self.vroot.normalize(destination)
        if create_parents and posixpath.dirname(dst_c) != "/":
            self.vroot.mkdir(posixpath.dirname(dst_c), parents=True, exist_ok=True)
        dst = self.vroot.resolve_virtual(dst_c)
        self._check_tree_target(src, dst, "copy")
        counter = CopyCounter(progress)
        with self.vroot.locate(src) as s, self.vroot.locate(dst) as d:
            try:
                st = os.stat(s.name, dir_fd=s.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound(f"No such file or directory: {src}") from None
            existing = lstat_at(d.dir_fd, d.name)
            if existing is not None and not overwrite:
                raise AlreadyExists(f"Destination exists: {dst}; pass overwrite=true to replace it")
            if stat_mod.S_ISDIR(st.st_mode):
                if existing is not None:
                    raise Conflict(f"Destination exists: {dst}; a directory is only copied to a new path")
                tmp = tmp_name()
                try:
                    os.mkdir(tmp, 0o700, dir_fd=d.dir_fd)
                    copy_dir_contents(s.dir_fd, s.name, d.dir_fd, tmp, counter, src)
                    os.chmod(tmp, stat_mod.S_IMODE(st.st_mode), dir_fd=d.dir_fd, follow_symlinks=False)
                    os.rename(tmp, d.name, src_dir_fd=d.dir_fd, dst_dir_fd=d.dir_fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(tmp, dir_fd=d.dir_fd)
                    raise
            else:
                require_regular(st, src)
                if existing is not None and stat_mod.S_ISDIR(existing.st_mode):
                    raise Conflict(f"Destination is a directory: {dst}")
                copy_file(s.dir_fd, s.name, d.dir_fd, d.name, st, counter, replace=True, vpath=src)
        out = {"path": dst, "source": src, "status": "success", "files": counter.files, "bytes": counter.bytes}
        if counter.skipped:
            out["skipped"] = counter.skipped
        return out
