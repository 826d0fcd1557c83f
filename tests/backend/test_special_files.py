"""special_files and VirtualRoot.open_file: real FIFOs, sockets and device nodes, never opened for a client."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.special_files import NotRegularFile, kind_of, open_at
from llmbasedos.protocol import errors

DEADLINE_S = 10.0


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, VirtualRoot]]:
    host = tmp_path / "root"
    host.mkdir()
    vroot = VirtualRoot(host)
    try:
        yield host, vroot
    finally:
        vroot.close()


def _unblock(fifo: Path) -> None:
    """Should an open have blocked on `fifo` after all, give it a writer so the thread ends."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _within_deadline(fn: Callable[[], Any], fifo: Path) -> Any:
    """Run `fn` in a thread; fail (rather than hang the suite) if it does not return before the deadline."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(DEADLINE_S):
        _unblock(fifo)
        done.wait(DEADLINE_S)
        pytest.fail(f"opening {fifo.name} blocked")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _device(path: Path) -> bool:
    """A /dev/zero-like character device at `path`, when this machine lets us make one."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return False
        raise
    return True


def test_kind_names(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    (tmp_path / "r").write_text("x")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s"))
        kinds = {name: kind_of(os.lstat(tmp_path / name).st_mode) for name in ("f", "r", "s")}
    assert kinds == {"f": "FIFO", "r": "regular file", "s": "socket"}
    assert kind_of(os.stat("/dev/null").st_mode) == "character device"
    assert kind_of(os.lstat(tmp_path).st_mode) == "directory"


def test_fifo_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR):
            with pytest.raises(NotRegularFile, match=r"Not a regular file: /pipe is a FIFO") as caught:
                _within_deadline(lambda f=flags: open_at(dir_fd, "pipe", f, "/pipe"), fifo)  # type: ignore[misc]
            assert caught.value.code == errors.CONFLICT and caught.value.kind == "FIFO"
    finally:
        os.close(dir_fd)


def test_fifo_swapped_in_after_the_check_is_refused_by_fstat(tmp_path: Path) -> None:
    # The caller's lstat saw a regular file; a FIFO took its place before the open. The open must not block
    # and the fstat must refuse it.
    target = tmp_path / "doc.docx"
    target.write_bytes(b"PK")
    checked = os.lstat(target)
    target.unlink()
    os.mkfifo(target)
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(NotRegularFile, match="is a FIFO"):
            _within_deadline(lambda: open_at(dir_fd, "doc.docx", os.O_RDONLY, "/doc.docx", st=checked), target)
    finally:
        os.close(dir_fd)
    # Nothing stayed open on the FIFO: a writer that does not block finds no reader.
    with pytest.raises(OSError) as caught:
        os.open(target, os.O_WRONLY | os.O_NONBLOCK)
    assert caught.value.errno == errno.ENXIO


def test_open_file_refuses_every_special_kind(root: tuple[Path, VirtualRoot]) -> None:
    host, vroot = root
    os.mkfifo(host / "pipe")
    (host / "to_pipe").symlink_to("pipe")
    (host / "zero_link").symlink_to("/dev/zero")
    (host / "plain.txt").write_text("plain")
    (host / "dir").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(host / "sock"))
        cases = {"/pipe": "FIFO", "/to_pipe": "FIFO", "/sock": "socket"}
        if _device(host / "zero"):
            cases["/zero"] = "character device"
        for vpath, kind in cases.items():
            with pytest.raises(NotRegularFile, match=f"is a {kind}$") as caught:
                _within_deadline(lambda v=vpath: vroot.open_file(v, os.O_RDONLY), host / "pipe")  # type: ignore[misc]
            assert str(host) not in caught.value.message
    with pytest.raises(errors.PathOutsideRoot):
        vroot.open_file("/zero_link", os.O_RDONLY)
    with pytest.raises(NotRegularFile, match="Is a directory: /dir"):
        vroot.open_file("/dir", os.O_RDONLY)
    fd, vpath, st = vroot.open_file("/plain.txt", os.O_RDONLY)
    try:
        assert vpath == "/plain.txt" and stat.S_ISREG(st.st_mode) and os.read(fd, 10) == b"plain"
    finally:
        os.close(fd)
    fd = vroot.open_dir("/dir")
    os.close(fd)


def test_append_never_opens_a_fifo_even_with_a_reader(root: tuple[Path, VirtualRoot]) -> None:
    host, vroot = root
    os.mkfifo(host / "pipe")
    reader = os.open(host / "pipe", os.O_RDONLY | os.O_NONBLOCK)  # a writer's open would now succeed
    try:
        with pytest.raises(NotRegularFile, match="is a FIFO"):
            vroot.open_file("/pipe", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        assert os.read(reader, 10) == b""
    finally:
        os.close(reader)
