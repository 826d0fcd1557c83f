"""A real WebDAV server on loopback: `rclone serve webdav` over a folder, for sync tests that need a remote
that is not on the local disk as far as the sync server can tell.

    dav = WebDav(folder)      # started; dav.url is http://127.0.0.1:<port>/
    ...
    dav.stop()
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.procs import wait_for

__all__ = ["WebDav"]

_STARTED = re.compile(r"WebDav Server started on (http://127\.0\.0\.1:\d+/)")


class WebDav:
    def __init__(self, folder: Path, timeout: float = 30.0) -> None:
        self.log = folder.with_name(folder.name + ".webdav.log")
        with self.log.open("wb") as out:
            # Port 0: the kernel picks a free port, and rclone prints the one it got. No directory cache, so
            # files a test writes straight into the folder are served at once.
            self.proc = subprocess.Popen(["rclone", "serve", "webdav", str(folder), "--addr", "127.0.0.1:0",
                                          "--config", "/dev/null", "--dir-cache-time", "0s"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            self.url: str = wait_for(self._started, timeout, what="rclone serve webdav to listen")
        except BaseException:
            self.stop()
            raise

    def _started(self) -> str | None:
        found = _STARTED.search(self.log.read_text(errors="replace"))
        if found is None and self.proc.poll() is not None:
            raise RuntimeError(f"rclone serve webdav exited: {self.log.read_text(errors='replace')}")
        return found.group(1) if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
