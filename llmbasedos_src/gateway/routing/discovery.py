"""Discovery: the run directory's `*.cap.json` files decide which backend services the gateway routes to.

Each backend writes `<run dir>/<service>.cap.json` (atomically) once its socket listens and removes it when it
stops. The gateway rescans the directory whenever it changes (inotify through watchfiles, with a periodic
rescan as a safety net) and registers, updates or unregisters services. A file is refused, with a log line
naming it and the fault, when it is malformed, when its name does not match the service it declares, when it
claims methods of another service or of the gateway, or when its socket lies outside the run directory. A
refused file never affects the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
from watchfiles import Change, awatch

from llmbasedos.gateway.routing.router import Router
from llmbasedos.protocol.caps import CapsError, ServiceCaps, parse_caps

__all__ = ["Discovery", "CAP_SUFFIX"]

log = logging.getLogger("llmbasedos.gateway.routing.discovery")

CAP_SUFFIX = ".cap.json"
_MAX_CAP_FILE = 1 << 20
_RESCAN_MS = 5000


@dataclass(frozen=True)
class _Seen:
    content: bytes
    service: str | None  # None: the file was refused


def _only_cap_files(change: Change, path: str) -> bool:
    return path.endswith(CAP_SUFFIX)


class Discovery:
    def __init__(self, run_dir: Path, router: Router) -> None:
        self.run_dir = run_dir
        self.router = router
        self._seen: dict[str, _Seen] = {}  # file name -> what it held when last read
        self.refused: dict[str, str] = {}  # file name -> why (for /status)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.scans = 0

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.scan()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                async for _ in awatch(self.run_dir, watch_filter=_only_cap_files, debounce=200, step=20,
                                      stop_event=self._stop, rust_timeout=_RESCAN_MS, yield_on_timeout=True,
                                      recursive=False):
                    self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The run dir vanished or the watcher failed: fall back to polling until it works again.
                log.exception("watching %s failed; polling instead", self.run_dir.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                self.scan()

    def scan(self) -> None:
        """Bring the routes in line with the capability files present now."""
        self.scans += 1
        try:
            names = sorted(e.name for e in os.scandir(self.run_dir)
                           if e.name.endswith(CAP_SUFFIX) and not e.name.startswith("."))
        except OSError as exc:
            log.error("cannot read the run directory: %s", exc.strerror)
            names = []
        present = set(names)
        for gone in [n for n in self._seen if n not in present]:
            seen = self._seen.pop(gone)
            self.refused.pop(gone, None)
            if seen.service is not None:
                log.info("service %s went away (%s removed)", seen.service, gone)
                self.router.remove_service(seen.service)
        for name in names:
            self._consider(name)

    def _consider(self, name: str) -> None:
        path = self.run_dir / name
        try:
            with path.open("rb") as fh:
                content = fh.read(_MAX_CAP_FILE + 1)
        except FileNotFoundError:
            return  # removed between listing and reading; the next scan unregisters it
        except OSError as exc:
            content = b""
            self._refuse(name, f"cannot be read: {exc.strerror}")
            return
        previous = self._seen.get(name)
        if previous is not None and previous.content == content:
            return
        if previous is not None and previous.service is not None:
            # The file changed: what it says now is the truth, even if that is nothing valid.
            self.router.remove_service(previous.service)
        try:
            caps = self._parse(name, content)
            self.router.add_service(caps, name)
        except CapsError as exc:
            self._seen[name] = _Seen(content, None)
            self._refuse(name, str(exc))
            return
        self._seen[name] = _Seen(content, caps.service_name)
        self.refused.pop(name, None)
        log.info("service %s registered with %d methods (%s)", caps.service_name, len(caps.capabilities), name)

    def _refuse(self, name: str, why: str) -> None:
        if self.refused.get(name) != why:
            log.error("refused capability file %s", why if why.startswith(name) else f"{name}: {why}")
        self.refused[name] = why

    def _parse(self, name: str, content: bytes) -> ServiceCaps:
        if len(content) > _MAX_CAP_FILE:
            raise CapsError(f"{name}: larger than {_MAX_CAP_FILE} bytes")
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise CapsError(f"{name}: not valid JSON") from None
        caps = parse_caps(data, name, require_socket=True)
        expected = name[: -len(CAP_SUFFIX)]
        if caps.service_name != expected:
            raise CapsError(f"{name}: declares service {caps.service_name!r}; only {caps.service_name}{CAP_SUFFIX} "
                            f"may do that")
        assert caps.socket is not None
        sock = Path(caps.socket)
        if not sock.is_absolute() or sock.parent.resolve() != self.run_dir.resolve():
            raise CapsError(f"{name}: socket must be a file directly inside the run directory")
        return caps
