"""Opening a file for a client without ever blocking on, or reading from, a special file.

A FIFO blocks open() until a writer comes and read() until it writes, so a few calls on one wedge a server's
whole thread pool; a device may never end (/dev/zero), or act on being opened (a tape rewinds, a terminal
becomes the controlling one); a UNIX socket cannot be opened at all. So every file a server opens for a
client is opened here, in three steps:

1. its kind is checked before the open, from the lstat the confined walk already made (or one made here):
   a FIFO, socket or device is refused without being opened;
2. the open never blocks and never follows a symlink or adopts a terminal (O_NONBLOCK, O_NOFOLLOW, O_NOCTTY);
3. the opened descriptor is checked again with fstat, so a special file swapped in between the check and the
   open is refused too, its descriptor closed unread.

Refusals are Conflict errors (NotRegularFile) that name the virtual path and its kind.
"""

from __future__ import annotations

import os
import stat as stat_mod

from llmbasedos.protocol.errors import Conflict

__all__ = ["OPEN_FLAGS", "NotRegularFile", "kind_of", "require_regular", "open_at"]

# What every open of a client's file adds to the caller's flags.
OPEN_FLAGS = os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC

_KINDS = (
    (stat_mod.S_ISREG, "regular file"),
    (stat_mod.S_ISDIR, "directory"),
    (stat_mod.S_ISLNK, "symlink"),
    (stat_mod.S_ISFIFO, "FIFO"),
    (stat_mod.S_ISSOCK, "socket"),
    (stat_mod.S_ISCHR, "character device"),
    (stat_mod.S_ISBLK, "block device"),
)


class NotRegularFile(Conflict):
    """A special file (or a directory where a file was wanted) was refused; `kind` says what it is."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def kind_of(mode: int) -> str:
    """What a stat mode names, in words for an error message."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def require_regular(st: os.stat_result, vpath: str, *, directory_ok: bool = False) -> None:
    """Refuse anything but a regular file (or a directory, when `directory_ok`), naming what it is."""
    mode = st.st_mode
    if stat_mod.S_ISREG(mode) or (directory_ok and stat_mod.S_ISDIR(mode)):
        return
    if stat_mod.S_ISDIR(mode):
        raise NotRegularFile(f"Is a directory: {vpath}", "directory")
    kind = kind_of(mode)
    raise NotRegularFile(f"Not a regular file: {vpath} is a {kind}", kind)


def open_at(dir_fd: int, name: str, flags: int, vpath: str, *, mode: int = 0o644,
            st: os.stat_result | None = None, directory_ok: bool = False) -> tuple[int, os.stat_result]:
    """Open `name` in `dir_fd` as described above; returns (fd, fstat of it). The caller closes the fd.

    `st` is the entry's lstat when the caller already has it. A missing entry is left to the open (ENOENT, or
    created with O_CREAT); OSErrors propagate for the caller's translation to virtual paths.
    """
    if st is None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
    # A symlink here is the caller's to resolve; the open below refuses it (ELOOP), which callers retry.
    if st is not None and not stat_mod.S_ISLNK(st.st_mode):
        require_regular(st, vpath, directory_ok=directory_ok)
    fd = os.open(name, flags | OPEN_FLAGS, mode, dir_fd=dir_fd)
    try:
        opened = os.fstat(fd)
        require_regular(opened, vpath, directory_ok=directory_ok)
    except BaseException:
        os.close(fd)
        raise
    return fd, opened
