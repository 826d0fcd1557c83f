"""VirtualRoot, tested directly on a real directory tree with real symlinks."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.backend.confinement import MAX_NAME_BYTES, VirtualRoot
from llmbasedos.protocol.errors import Conflict, Forbidden, InvalidParams, NotFound, PathOutsideRoot, RPCError

SECRET = b"TOPSECRET-common-utils"


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lbvr", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vr(base: Path) -> VirtualRoot:
    root = base / "root"
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    (root / "d1" / "d2" / "d3").mkdir(parents=True)
    (root / "d1" / "d2" / "d3" / "deep.txt").write_text("deep")
    (root / "a.txt").write_text("a")
    os.symlink(base / "outside", root / "out_abs")  # depth 1, absolute
    os.symlink("../../outside", root / "d1" / "out_rel")  # depth 2, relative, climbs out
    os.symlink("../../../../outside", root / "d1" / "d2" / "d3" / "out3")  # depth 4
    os.symlink("d1/d2", root / "in_rel")  # inside, relative
    os.symlink(root / "d1", root / "in_abs")  # inside, absolute host path
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink("missing", root / "dangling_in")
    os.symlink("/nonexistent-lbvr/x", root / "dangling_out")
    return VirtualRoot(root)


def test_root_is_created_and_resolved(base: Path) -> None:
    vr = VirtualRoot(base / "new" / "root")
    assert vr.root == (base / "new" / "root").resolve()
    assert vr.root.is_dir()


@pytest.mark.parametrize(("given", "expected"), [
    ("/", "/"), ("a", "/a"), ("/a/b", "/a/b"), ("//a///b//", "/a/b"), ("/a/./b/.", "/a/b"),
    ("/a/b/../c", "/a/c"), ("a/..", "/"), ("./a", "/a"), ("/a\\..\\b", "/a\\..\\b"), ("/%2e%2e", "/%2e%2e"),
    ("/...", "/..."),
])
def test_normalize(vr: VirtualRoot, given: str, expected: str) -> None:
    assert vr.normalize(given) == expected


@pytest.mark.parametrize(("given", "error"), [
    ("..", PathOutsideRoot), ("/..", PathOutsideRoot), ("/a/../..", PathOutsideRoot), ("../a", PathOutsideRoot),
    ("", InvalidParams), ("a\0b", InvalidParams), (None, InvalidParams), (1, InvalidParams), (b"/a", InvalidParams),
    (["a"], InvalidParams), ("x" * (MAX_NAME_BYTES + 1), InvalidParams), ("/a" * 3000, InvalidParams),
    ("\ud800", InvalidParams),
])
def test_normalize_refuses(vr: VirtualRoot, given: object, error: type[RPCError]) -> None:
    with pytest.raises(error):
        vr.normalize(given)


def test_resolve_and_to_virtual(vr: VirtualRoot) -> None:
    assert vr.resolve("/a.txt") == vr.root / "a.txt"
    assert vr.resolve("/") == vr.root
    assert vr.resolve("/in_rel/d3/deep.txt", must_exist=True) == vr.root / "d1/d2/d3/deep.txt"
    assert vr.resolve("/in_abs/d2") == vr.root / "d1/d2"
    assert vr.resolve("/new.txt") == vr.root / "new.txt"
    assert vr.resolve("/dangling_in") == vr.root / "missing"
    assert vr.to_virtual(vr.root) == "/"
    assert vr.to_virtual(vr.root / "d1" / "x") == "/d1/x"
    assert vr.to_virtual(str(vr.root) + "/d1/../a.txt") == "/a.txt"
    assert vr.normalize("/in_rel/..") == "/"  # `..` is lexical on the virtual path


@pytest.mark.parametrize("vpath", [
    "/out_abs", "/out_abs/secret.txt", "/d1/out_rel/secret.txt", "/d1/d2/d3/out3/secret.txt",
    "/in_rel/../out_abs/secret.txt", "/in_abs/out_rel/secret.txt", "/dangling_out",
])
def test_symlinks_out_are_refused(vr: VirtualRoot, vpath: str) -> None:
    with pytest.raises(PathOutsideRoot) as info:
        vr.resolve(vpath)
    assert str(vr.root) not in info.value.message
    with pytest.raises(PathOutsideRoot):
        vr.open_fd(vpath, os.O_RDONLY)


def test_links_are_not_followed_when_asked_not_to(vr: VirtualRoot) -> None:
    assert vr.stat("/out_abs", follow_symlinks=False).st_size > 0
    assert vr.readlink("/out_abs") is None
    assert vr.readlink("/in_rel") == "/d1/d2"
    assert vr.readlink("/in_abs") == "/d1"


def _general_stat(vr: VirtualRoot, vpath: str, follow: bool) -> tuple[str, int, int] | str:
    """The answer of the general walk (`locate`), which stat_with_path's straight fast path must match."""
    try:
        with vr.locate(vpath, follow_last=follow) as loc:
            st = loc.st or os.stat(loc.name, dir_fd=loc.dir_fd, follow_symlinks=False)
            return loc.vpath, st.st_ino, st.st_mode
    except (RPCError, FileNotFoundError) as exc:
        return type(exc).__name__.replace("FileNotFoundError", "NotFound")


@pytest.mark.parametrize("follow", [True, False])
@pytest.mark.parametrize("vpath", [
    "/", "/a.txt", "/d1", "/d1/d2/d3/deep.txt", "//d1/./d2/../d2/d3/deep.txt", "/in_rel", "/in_rel/d3/deep.txt",
    "/in_abs/d2", "/out_abs", "/out_abs/secret.txt", "/d1/out_rel", "/d1/out_rel/secret.txt", "/loop_a",
    "/loop_a/x", "/dangling_in", "/dangling_out", "/missing", "/d1/missing/x", "/a.txt/x", "/d1/d2/d3/out3",
])
def test_stat_fast_path_agrees_with_the_general_walk(vr: VirtualRoot, vpath: str, follow: bool) -> None:
    expected = _general_stat(vr, vpath, follow)
    try:
        got_path, st = vr.stat_with_path(vpath, follow_symlinks=follow)
        got: tuple[str, int, int] | str = (got_path, st.st_ino, st.st_mode)
    except RPCError as exc:
        got = type(exc).__name__
        assert str(vr.root) not in exc.message
    assert got == expected


def test_loops_and_missing(vr: VirtualRoot) -> None:
    with pytest.raises(InvalidParams, match="symbolic links"):
        vr.resolve("/loop_a")
    with pytest.raises(InvalidParams):
        vr.resolve("/loop_a/x")
    with pytest.raises(NotFound):
        vr.resolve("/nope/x")
    with pytest.raises(NotFound):
        vr.resolve("/nope", must_exist=True)
    with pytest.raises(Conflict):
        vr.resolve("/a.txt/x")


def test_to_virtual_refuses_outside(vr: VirtualRoot, base: Path) -> None:
    for host in (base / "outside" / "secret.txt", base, Path("/etc/passwd"), Path(str(vr.root) + "x")):
        with pytest.raises(PathOutsideRoot) as info:
            vr.to_virtual(host)
        assert str(base) not in info.value.message


def test_open_fd_reads_and_creates_inside(vr: VirtualRoot) -> None:
    fd = vr.open_fd("/in_rel/d3/deep.txt", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"deep"
    finally:
        os.close(fd)
    fd = vr.open_fd("/dangling_in", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.close(fd)
    assert (vr.root / "missing").is_file()


def test_dir_fd_helpers(vr: VirtualRoot, base: Path) -> None:
    assert vr.mkdir("/n1/n2/n3", parents=True) is True
    assert vr.mkdir("/n1/n2", exist_ok=True) is False
    with pytest.raises(RPCError):
        vr.mkdir("/n1")
    with pytest.raises(PathOutsideRoot):
        vr.mkdir("/out_abs/made", parents=True)
    assert not (base / "outside" / "made").exists()
    vr.rename("/n1/n2", "/moved")
    assert (vr.root / "moved" / "n3").is_dir()
    vr.rmdir("/moved/n3")
    vr.rmtree("/moved")
    vr.unlink("/out_abs")  # the link goes, the target stays
    assert (base / "outside" / "secret.txt").read_bytes() == SECRET
    with pytest.raises(Forbidden):
        vr.rmtree("/")
    assert vr.exists("/a.txt") and not vr.exists("/out_abs")


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directory entries (renameat2 RENAME_EXCHANGE), or swap them in two renames."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is not None and fn(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:
        return
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def test_swapped_symlink_never_escapes(vr: VirtualRoot, base: Path) -> None:
    """A thread flips a directory and a file into symlinks to the outside while we read and write through them."""
    root = vr.root
    (root / "race").mkdir()
    (root / "race" / "secret.txt").write_text("inside")
    os.symlink(base / "outside", root / "race_alt")
    (root / "file").write_text("inside")
    os.symlink(base / "outside" / "secret.txt", root / "file_alt")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            _exchange(root / "race", root / "race_alt")
            _exchange(root / "file", root / "file_alt")

    flipper = threading.Thread(target=flip)
    flipper.start()
    seen: set[bytes] = set()
    try:
        for i in range(1500):
            for vpath in ("/race/secret.txt", "/file"):
                try:
                    fd = vr.open_fd(vpath, os.O_RDONLY)
                except RPCError:
                    continue
                try:
                    seen.add(os.read(fd, 100))
                finally:
                    os.close(fd)
            try:
                fd = vr.open_fd(f"/race/w{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                os.close(fd)
            except RPCError:
                pass
            try:
                vr.mkdir(f"/race/m{i}")
            except RPCError:
                pass
    finally:
        stop.set()
        flipper.join()
    assert SECRET not in seen
    assert b"inside" in seen
    assert sorted(os.listdir(base / "outside")) == ["secret.txt"]
    assert (base / "outside" / "secret.txt").read_bytes() == SECRET


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_lookups_leak_no_descriptors_and_close_releases_the_root(base: Path) -> None:
    vr = VirtualRoot(base / "r")
    (vr.root / "d").mkdir()
    (vr.root / "d" / "f.txt").write_text("f")
    (vr.root / "top.txt").write_text("t")
    before = _open_fds()
    for vpath in ("/", "/top.txt", "/d", "/d/f.txt", "/d/missing", "/missing/x"):
        for _ in range(50):
            try:
                vr.stat(vpath)
            except NotFound:
                pass
    assert _open_fds() == before
    vr.close()
    assert _open_fds() == before - 1
    with pytest.raises(RPCError, match="Bad file descriptor"):
        vr.stat("/top.txt")


def test_a_replaced_root_directory_is_picked_up(base: Path) -> None:
    vr = VirtualRoot(base / "r")
    (vr.root / "old.txt").write_text("old")
    assert vr.exists("/old.txt")
    os.rename(vr.root, base / "r-moved-away")
    (base / "r").mkdir()
    (base / "r" / "new.txt").write_text("new")

    deadline = time.monotonic() + 30
    while not vr.exists("/new.txt"):  # the held descriptor is re-checked at most once a second
        assert time.monotonic() < deadline, "the new root directory was never picked up"
        time.sleep(0.05)
    assert not vr.exists("/old.txt")
    with vr.locate("/new.txt") as loc:
        assert os.stat(loc.name, dir_fd=loc.dir_fd).st_size == 3
