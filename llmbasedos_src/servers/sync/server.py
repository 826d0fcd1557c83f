"""The sync server: rclone jobs between remotes of rclone.conf and folders of the virtual root.

Configuration (besides the common `LLMBDO_*` settings):

    LLMBDO_RCLONE_CONFIG     rclone.conf to use          (default: <config_dir>/rclone.conf)
    LLMBDO_RCLONE_BIN        the rclone program          (default: `rclone` found on PATH)
    LLMBDO_SYNC_MAX_JOBS     jobs running at once        (default: 2; more wait in a queue)
    LLMBDO_SYNC_MAX_QUEUED   jobs waiting at most        (default: 32)
    LLMBDO_SYNC_KEEP_JOBS    finished jobs remembered    (default: 500; older records and logs are deleted)
    LLMBDO_SYNC_LOCAL_REMOTES  remotes that reach the local disk: refuse (default) or confine (their paths are
                             kept inside the virtual root; see local_remotes.py)

Job records live in `<data_dir>/sync/jobs.sqlite`, each job's rclone log in `<data_dir>/sync/logs/`.

A job belongs to the client that started it (the caller the gateway forwards): listJobs, getJobStatus and
stopJob show and touch only the caller's own jobs; the owner sees all. Another client's job is "not
found", exactly like an id that never existed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.protocol import errors
from llmbasedos.protocol.caller import Caller
from llmbasedos.servers.sync.jobs import JobLimits, JobManager
from llmbasedos.servers.sync.local_remotes import LocalRemotes, judge
from llmbasedos.servers.sync.rclone_args import Location, overlaps, parse_flags, parse_location
from llmbasedos.servers.sync.rclone_log import Redactor
from llmbasedos.servers.sync.remotes import read_remotes
from llmbasedos.servers.sync.store import JobStore
from llmbasedos.settings import Settings

__all__ = ["SyncServer", "SyncSettings"]


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return value


@dataclass(frozen=True)
class SyncSettings:
    rclone_config: Path
    rclone_bin: str | None
    limits: JobLimits
    local_remotes: LocalRemotes

    @classmethod
    def from_env(cls, settings: Settings) -> SyncSettings:
        conf = os.environ.get("LLMBDO_RCLONE_CONFIG")
        binary = os.environ.get("LLMBDO_RCLONE_BIN") or shutil.which("rclone")
        return cls(
            rclone_config=Path(conf) if conf else settings.config_dir / "rclone.conf",
            rclone_bin=binary,
            limits=JobLimits(
                max_running=_int_env("LLMBDO_SYNC_MAX_JOBS", 2, 1, 64),
                max_queued=_int_env("LLMBDO_SYNC_MAX_QUEUED", 32, 0, 10_000),
                keep_finished=_int_env("LLMBDO_SYNC_KEEP_JOBS", 500, 1, 1_000_000),
            ),
            local_remotes=LocalRemotes.from_env(),
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _progress_message(p: dict[str, Any]) -> str:
    text = (f"{p['files']}/{p['total_files']} files, {_human(p['bytes'])}/{_human(p['total_bytes'])}, "
            f"{_human(p['speed'])}/s")
    if p.get("eta") is not None:
        text += f", ETA {p['eta']} s"
    if p.get("errors"):
        text += f", {p['errors']} errors"
    return text


class SyncServer(MCPServer):
    service_name = "sync"
    caps_file = Path(__file__).with_name("caps.json")

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        try:
            self.sync_settings = SyncSettings.from_env(self.settings)
        except ValueError as exc:
            self.log.error("refusing to start: %s", exc)
            raise SystemExit(2) from None
        self.vroot = VirtualRoot(self.settings.virtual_root)
        self.state_dir = self.settings.data_dir / "sync"
        self.redact = Redactor(self.vroot.root, {
            self.sync_settings.rclone_config: "rclone.conf",
            self.state_dir: "<sync data>",
        })
        self._jobs: JobManager | None = None
        self._store: JobStore | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def jobs(self) -> JobManager:
        if self._jobs is None:
            raise errors.ServiceUnavailable("The sync service is starting")
        return self._jobs

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._store = JobStore(self.state_dir / "jobs.sqlite")
        self._jobs = JobManager(store=self._store, logs_dir=self.state_dir / "logs",
                                rclone=self.sync_settings.rclone_bin or "rclone",
                                config=self.sync_settings.rclone_config, redact=self.redact,
                                limits=self.sync_settings.limits)
        interrupted = await self._jobs.recover()
        if interrupted:
            self.log.warning("%d job(s) from the previous run recorded as interrupted", len(interrupted))
        if self.sync_settings.rclone_bin is None:
            self.log.warning("rclone was not found on PATH; runJob will fail until it is installed")

    def request_stop(self) -> None:
        # Running jobs are ended as soon as the stop is asked for, so calls waiting on them answer (with
        # state "interrupted") within the shutdown grace instead of being cancelled.
        loop = self._loop
        if loop is not None and self._jobs is not None:
            jobs = self._jobs
            loop.call_soon_threadsafe(jobs.begin_shutdown)
        super().request_stop()

    async def on_stop(self) -> None:
        if self._jobs is not None:
            await self._jobs.begin_shutdown()
        if self._store is not None:
            self._store.close()

    def _map_params(self, handler: Any, params: Any) -> dict[str, Any]:
        # The original llmbasedos sent runJob's params as a one-element array holding the object.
        if (handler.cap.method == "mcp.sync.runJob" and isinstance(params, list) and len(params) == 1
                and isinstance(params[0], dict)):
            return params[0]  # type: ignore[no-any-return]
        return super()._map_params(handler, params)

    # -- handlers ------------------------------------------------------------------------------------------

    @method("mcp.sync.listRemotes")
    def list_remotes(self, params: dict[str, Any], ctx: CallContext) -> Any:
        remotes = read_remotes(self.sync_settings.rclone_config)
        out = []
        for remote in sorted(remotes.values(), key=lambda r: r.name):
            verdict = judge(remotes, remote.name, "", self.sync_settings.local_remotes, self.vroot.root)
            out.append({**remote.as_dict(), "local": verdict.local, "usable": verdict.refused is None,
                        "refused": verdict.refused})
        return out

    @method("mcp.sync.listJobs")
    async def list_jobs(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.jobs.list(Caller.of(ctx.caller), state=params.get("state"), limit=params.get("limit", 50))

    def _locations(self, mode: str, source: str, destination: str) -> tuple[Location, Location]:
        remotes = read_remotes(self.sync_settings.rclone_config)
        policy = self.sync_settings.local_remotes
        src = parse_location("source", source, self.vroot, remotes, must_exist=True, local_remotes=policy)
        dst = parse_location("destination", destination, self.vroot, remotes, must_exist=False,
                             local_remotes=policy)
        root = self.vroot.root
        if mode == "sync" and root in dst.host_paths:
            raise errors.InvalidParams("sync into the virtual root itself would delete everything else in it; "
                                       "choose a folder")
        if mode == "move" and root in src.host_paths:
            raise errors.InvalidParams("moving the whole virtual root is not allowed; choose a folder")
        if mode != "check" and overlaps(src, dst):
            raise errors.InvalidParams("source and destination overlap (one is inside the other)")
        return src, dst

    @method("mcp.sync.runJob")
    async def run_job(self, params: dict[str, Any], ctx: CallContext) -> Any:
        jobs = self.jobs
        if self.sync_settings.rclone_bin is None:
            raise errors.FeatureUnavailable("rclone is not installed")
        mode = params.get("mode", "copy")
        flags = parse_flags(params.get("flags", []), mode)
        src, dst = self._locations(mode, params["source"], params["destination"])
        caller = Caller.of(ctx.caller)
        rec = jobs.submit(mode, src, dst, flags, bool(params.get("dry_run", False)), caller)
        self.log.info("job started", extra={"job": rec.id, "mode": mode, "dry_run": rec.dry_run})
        if not params.get("wait", False):
            return jobs.summary(rec)

        def on_progress(p: dict[str, Any]) -> None:
            if ctx.connected:
                ctx.progress(p["bytes"], p["total_bytes"] or None, _progress_message(p))

        try:
            status = await jobs.wait(rec.id, caller, on_progress, log_lines=params.get("log_lines", 20))
        except asyncio.CancelledError:
            # The caller gave up on the call that started the job: the job goes with it.
            task = asyncio.get_running_loop().create_task(jobs.stop(rec.id, caller))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        return status

    @method("mcp.sync.getJobStatus")
    async def get_job_status(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.jobs.status(params["job_id"], Caller.of(ctx.caller), log_lines=params.get("log_lines", 20))

    @method("mcp.sync.stopJob")
    async def stop_job(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return await self.jobs.stop(params["job_id"], Caller.of(ctx.caller))
