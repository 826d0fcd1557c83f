"""The sync server's test harness: a temporary rclone.conf, a virtual root and a real WebDAV remote.

Remotes that are not on the local disk: `dav` (WebDAV, served by a real `rclone serve webdav` on loopback),
`backup` (an alias of a folder of it) and `vault` (crypt over another, with a password obscured by `rclone
obscure`). Remotes that reach the local disk, refused unless LLMBDO_SYNC_LOCAL_REMOTES=confine: `disk` (type
local), `etc` (alias of `disk:/etc`), `outside` (alias of a folder outside the virtual root), `sealed` (crypt
over `disk:/etc`), `pool` (union of `backup:` and `/tmp`), `kept` (alias of a folder inside the virtual root),
`loop` (an alias of itself). Long jobs are a large sparse file sent with --bwlimit, so they run until stopped.
Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbasedos.rpc.client import RPCClient
from tests.gateway.harness import WsClient
from tests.support.procs import ServerHandle
from tests.support.webdav import WebDav

__all__ = ["BIG", "LOCAL_REMOTES", "PASSWORD", "SLOW", "SyncEnv", "big_file", "connect", "gone", "make_env",
           "tree", "until", "wait_running", "wait_state"]

PASSWORD = "correct horse battery staple"
BIG = 1 << 30  # sparse: costs no disk on the source side
SLOW = ["--bwlimit=1M"]
LOCAL_REMOTES = ("disk", "etc", "kept", "loop", "outside", "pool", "sealed")


@dataclass
class SyncEnv:
    base: Path
    root: Path
    remote: Path
    crypt: Path
    conf: Path
    obscured: str
    env: dict[str, str]
    dav: WebDav

    def close(self) -> None:
        self.dav.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def make_env(**extra: str) -> SyncEnv:
    base = Path(tempfile.mkdtemp(prefix="lbsy", dir="/tmp"))
    root, served = base / "root", base / "served"
    remote, crypt = served / "remote", served / "crypt"
    for d in (root, remote, crypt, base / "outside"):
        d.mkdir(parents=True)
    obscured = subprocess.run(["rclone", "obscure", PASSWORD], capture_output=True, text=True,
                              check=True).stdout.strip()
    dav = WebDav(served)
    conf = base / "rclone.conf"
    conf.write_text(f"[dav]\ntype = webdav\nurl = {dav.url}\nvendor = rclone\n\n"
                    "[backup]\ntype = alias\nremote = dav:remote\n\n"
                    f"[vault]\ntype = crypt\nremote = dav:crypt\npassword = {obscured}\n\n"
                    "[disk]\ntype = local\n\n"
                    "[etc]\ntype = alias\nremote = disk:/etc\n\n"
                    f"[outside]\ntype = alias\nremote = {base}/outside\n\n"
                    f"[sealed]\ntype = crypt\nremote = disk:/etc\npassword = {obscured}\n\n"
                    "[pool]\ntype = union\nupstreams = backup: /tmp\n\n"
                    f"[kept]\ntype = alias\nremote = {root}/kept\n\n"
                    "[loop]\ntype = alias\nremote = loop:x\n")
    env = {
        "LLMBDO_STATE_DIR": str(base / "state"),
        "LLMBDO_RUN_DIR": str(base / "run"),
        "LLMBDO_DATA_DIR": str(base / "data"),
        "LLMBDO_LOG_DIR": str(base / "logs"),
        "LLMBDO_CONFIG_DIR": str(base / "config"),
        "LLMBDO_VIRTUAL_ROOT": str(root),
        "LLMBDO_RCLONE_CONFIG": str(conf),
        "LLMBDO_DEBUG": "1",  # results are checked against their result_schema
        # If any of these reached rclone, copies would silently do nothing: the environment must be scrubbed.
        "RCLONE_DRY_RUN": "true",
        "RCLONE_EXCLUDE": "*",
        **extra,
    }
    return SyncEnv(base, root, remote, crypt, conf, obscured, env, dav)


@contextlib.asynccontextmanager
async def connect(handle: ServerHandle) -> AsyncIterator[RPCClient]:
    client = await RPCClient.connect_unix(str(handle.socket))
    try:
        yield client
    finally:
        await client.close()


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie left to a parent that does not reap counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_running(client: RPCClient | WsClient, job_id: str) -> dict[str, Any]:
    """Until rclone has sent stats showing bytes moving."""

    async def probe() -> dict[str, Any] | None:
        st = await client.call("mcp.sync.getJobStatus", {"job_id": job_id})
        assert st["state"] in ("queued", "running"), st
        ok = st["state"] == "running" and st["progress"] and st["progress"]["bytes"] > 0
        return st if ok else None

    return await until(probe, f"job {job_id} to be running")  # type: ignore[no-any-return]


async def wait_state(client: RPCClient | WsClient, job_id: str, *states: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        st = await client.call("mcp.sync.getJobStatus", {"job_id": job_id})
        return st if st["state"] in states else None

    return await until(probe, f"job {job_id} to reach {states}")  # type: ignore[no-any-return]


def big_file(root: Path, folder: str) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    with open(root / folder / "big.bin", "wb") as fh:
        fh.truncate(BIG)


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}
