"""Copying files and trees fd by fd inside the virtual root (the fs server's `copy`), and the temp names of
atomic replacements. Blocking: callers run these in a thread pool.

A file is copied through a temp file renamed into place; a tree is built under a temp name by its caller and
renamed whole. Symlinks are copied as links and never followed; FIFOs, sockets and devices are never opened
(`special_files`): refused as a source file, skipped and listed inside a tree.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import stat as stat_mod
from collections.abc import Callable

from llmbasedos.backend.special_files import kind_of, open_at

__all__ = ["Progress", "CopyCounter", "lstat_at", "copy_file", "copy_dir_contents", "tmp_name", "TMP_PREFIX"]

Progress = Callable[[int, int | None, str | None], None]

TMP_PREFIX = ".llmbdo-tmp-"
_CHUNK = 8 << 20
_MAX_REPORTED_SKIPS = 100


def tmp_name() -> str:
    # Short and unique: the final name may already be close to NAME_MAX.
    return f"{TMP_PREFIX}{secrets.token_hex(6)}"


class CopyCounter:
    __slots__ = ("bytes", "files", "progress", "skipped")

    def __init__(self, progress: Progress | None) -> None:
        self.files = 0
        self.bytes = 0
        self.progress = progress
        self.skipped: list[dict[str, str]] = []

    def skip(self, vpath: str, mode: int) -> None:
        if len(self.skipped) < _MAX_REPORTED_SKIPS:
            self.skipped.append({"path": vpath, "reason": f"{kind_of(mode)}, not a regular file"})

    def add(self, size: int, name: str) -> None:
        self.files += 1
        self.bytes += size
        if self.progress is not None:
            self.progress(self.files, None, name)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def copy_file(src_dir: int, src_name: str, dst_dir: int, dst_name: str, st: os.stat_result, counter: CopyCounter,
              *, replace: bool, vpath: str) -> None:
    """Copy one regular file; with `replace` through a temp file and rename, so the destination is whole."""
    in_fd, _ = open_at(src_dir, src_name, os.O_RDONLY, vpath, st=st)
    try:
        target = tmp_name() if replace else dst_name
        out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dst_dir)
        try:
            try:
                copied = 0
                while True:
                    n = os.sendfile(out_fd, in_fd, None, _CHUNK)
                    if n == 0:
                        break
                    copied += n
                os.fchmod(out_fd, stat_mod.S_IMODE(st.st_mode))
                os.fsync(out_fd)
            finally:
                os.close(out_fd)
            if replace:
                os.rename(target, dst_name, src_dir_fd=dst_dir, dst_dir_fd=dst_dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target, dir_fd=dst_dir)
            raise
    finally:
        os.close(in_fd)
    counter.add(copied, dst_name)


def copy_dir_contents(src_parent: int, src_name: str, dst_parent: int, dst_name: str, counter: CopyCounter,
                      vpath: str) -> None:
    """Copy a tree fd by fd. Symlinks are copied as links (never followed), special files are skipped (and
    listed: a FIFO or a device has no content to copy, and opening one could block or act)."""
    sfd = os.open(src_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_parent)
    try:
        dfd = os.open(dst_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_parent)
        try:
            with os.scandir(sfd) as it:
                items = list(it)
            for item in items:
                st = item.stat(follow_symlinks=False)
                if stat_mod.S_ISDIR(st.st_mode):
                    os.mkdir(item.name, 0o700, dir_fd=dfd)
                    copy_dir_contents(sfd, item.name, dfd, item.name, counter, posixpath.join(vpath, item.name))
                    os.chmod(item.name, stat_mod.S_IMODE(st.st_mode), dir_fd=dfd, follow_symlinks=False)
                elif stat_mod.S_ISREG(st.st_mode):
                    copy_file(sfd, item.name, dfd, item.name, st, counter, replace=False,
                              vpath=posixpath.join(vpath, item.name))
                elif stat_mod.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(item.name, dir_fd=sfd), item.name, dir_fd=dfd)
                else:
                    counter.skip(posixpath.join(vpath, item.name), st.st_mode)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
