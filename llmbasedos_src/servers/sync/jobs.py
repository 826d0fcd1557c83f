"""Running rclone jobs: a queue bounded by a number of slots, one rclone process group per job, its output
pumped into the job's log file and parsed for stats, and a record in the store at every change of state.

Life of a job: queued -> running -> succeeded | failed | stopped | interrupted (a queued job may go straight
to stopped or interrupted).

What happens when the server goes away:
- a graceful shutdown (SIGTERM) terminates every running rclone process group and records those jobs, and the
  queued ones, as `interrupted`;
- a crash leaves rclone writing its log into a pipe nobody reads: it dies of SIGPIPE at its next line (stats
  come every second). The next start records every job still `queued` or `running` as `interrupted`, and
  terminates any rclone process left over, recognised by the job id in its environment (never by name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from llmbasedos.protocol import errors
from llmbasedos.protocol.caller import Caller
from llmbasedos.servers.sync.rclone_args import Location, ParsedFlags, build_argv
from llmbasedos.servers.sync.rclone_log import (
    LogEvent,
    Redactor,
    describe_exit,
    final_error,
    format_event,
    parse_combined,
    parse_line,
    progress_from_stats,
    read_tail_events,
)
from llmbasedos.servers.sync.store import LIVE_STATES, JobRecord, JobStore

log = logging.getLogger("llmbasedos.sync")

__all__ = ["JobManager", "JobLimits", "ProgressListener", "JOB_ENV_MARK"]

ProgressListener = Callable[[dict[str, Any]], None]
JOB_ENV_MARK = "LLMBDO_SYNC_JOB"
_MAX_LINE = 256 * 1024  # longer lines (a huge stats block) are cut in the log and not parsed


@dataclass(frozen=True)
class JobLimits:
    max_running: int = 2
    max_queued: int = 32
    keep_finished: int = 500
    log_soft_cap: int = 32 * 1024 * 1024  # past it only warnings and errors are written
    log_hard_cap: int = 64 * 1024 * 1024  # past it nothing is
    stop_grace: float = 10.0


class _Live:
    """A job this process is running or holding in its queue."""

    def __init__(self, record: JobRecord, argv: list[str]) -> None:
        self.record = record
        self.argv = argv
        self.task: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.done = asyncio.Event()
        self.listeners: list[ProgressListener] = []
        self.stop_as: str | None = None  # the state to record once the process is gone, when we ended it
        self.has_slot = False
        self.errors: deque[LogEvent] = deque(maxlen=50)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _child_env(job_id: str) -> dict[str, str]:
    # RCLONE_* from outside could set --password-command, --config or anything else: none may reach rclone.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "LLMBDO_"))}
    env[JOB_ENV_MARK] = job_id
    return env


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _runs_job(pid: int, job_id: str) -> bool:
    """Whether `pid` is the rclone of `job_id` (a reused pid belongs to someone else and is left alone)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{JOB_ENV_MARK}={job_id}".encode() in environ.split(b"\0")


class JobManager:
    def __init__(self, *, store: JobStore, logs_dir: Path, rclone: str, config: Path, redact: Redactor,
                 limits: JobLimits) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self.rclone = rclone
        self.config = config
        self.redact = redact
        self.limits = limits
        self._live: dict[str, _Live] = {}
        self._slots = asyncio.Semaphore(limits.max_running)
        self._closing = False
        self._shutdown_task: asyncio.Task[None] | None = None
        logs_dir.mkdir(parents=True, exist_ok=True)

    def log_path(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def report_path(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.check.txt"

    # -- start-up ------------------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Record the jobs a previous run left queued or running as interrupted; returns their ids."""
        found = self.store.live()
        for rec in found:
            if rec.state == "running" and rec.pid and _runs_job(rec.pid, rec.id):
                await self._end_orphan(rec.pid, rec.id)
            was = rec.state
            events = read_tail_events(self.log_path(rec.id))
            stats = [e.stats for e in events if e.stats is not None]
            if stats:
                rec.progress = progress_from_stats(stats[-1], self.redact)
            rec.state = "interrupted"
            rec.ended_at = time.time()
            rec.error = f"the sync server stopped while this job was {was}"
            self.store.save(rec)
        return [r.id for r in found]

    async def _end_orphan(self, pid: int, job_id: str) -> None:
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.limits.stop_grace
        # Not our child, so there is nothing to wait() on: look until it is gone.
        while _runs_job(pid, job_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if _runs_job(pid, job_id):
            _kill_group(pid, signal.SIGKILL)

    # -- queries -------------------------------------------------------------------------------------------

    def _record(self, job_id: str, caller: Caller) -> tuple[JobRecord, _Live | None]:
        live = self._live.get(job_id)
        rec = live.record if live is not None else self.store.get(job_id)
        # Another client's job gets the answer of an id that never existed, so ids tell nothing.
        if rec is None or not caller.owns(rec.client_id):
            raise errors.NotFound(f"No such job: {job_id}")
        return rec, live

    def status(self, job_id: str, caller: Caller, *, log_lines: int = 20) -> dict[str, Any]:
        rec, _ = self._record(job_id, caller)
        out = self.summary(rec)
        if log_lines > 0:
            events = [e for e in read_tail_events(self.log_path(job_id)) if e.stats is None]
            out["log"] = [format_event(e, self.redact) for e in events[-log_lines:]]
        else:
            out["log"] = []
        return out

    def summary(self, rec: JobRecord) -> dict[str, Any]:
        return {
            "job_id": rec.id,
            "mode": rec.mode,
            "source": rec.source,
            "destination": rec.destination,
            "dry_run": rec.dry_run,
            "flags": list(rec.flags),
            "state": rec.state,
            "is_running": rec.state == "running",
            "created_at": _iso(rec.created_at),
            "started_at": _iso(rec.started_at),
            "ended_at": _iso(rec.ended_at),
            "pid": rec.pid if rec.state == "running" else None,
            "exit_code": rec.exit_code,
            "error": rec.error,
            "progress": rec.progress,
            "check": rec.check_summary,
        }

    def list(self, caller: Caller, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        out = []
        for rec in self.store.recent(state=state, limit=limit, client_id=caller.only):
            live = self._live.get(rec.id)
            out.append(self.summary(live.record if live is not None else rec))
        return out

    # -- running -------------------------------------------------------------------------------------------

    def submit(self, mode: str, source: Location, destination: Location, flags: ParsedFlags,
               dry_run: bool, caller: Caller) -> JobRecord:
        if self._closing:
            raise errors.ServiceUnavailable("The sync service is shutting down")
        if len(self._live) >= self.limits.max_running + self.limits.max_queued:
            raise errors.Conflict(f"Too many jobs: {self.limits.max_running} may run and {self.limits.max_queued} "
                                  "wait; stop some or wait for them to finish")
        job_id = f"job-{secrets.token_hex(6)}"
        dry = dry_run or flags.dry_run
        argv = build_argv(self.rclone, mode, source, destination, flags, config=self.config, dry_run=dry,
                          combined_report=self.report_path(job_id) if mode == "check" else None)
        rec = JobRecord(id=job_id, mode=mode, source=source.display, destination=destination.display,
                        dry_run=dry, flags=list(flags.args), state="queued", created_at=time.time(),
                        client_id=caller.client_id)
        self.store.save(rec)
        live = _Live(rec, argv)
        self._live[job_id] = live
        live.task = asyncio.get_running_loop().create_task(self._run(live), name=f"sync-{job_id}")
        return rec

    async def _run(self, live: _Live) -> None:
        state, code, error = "failed", None, None
        try:
            async with self._slots:
                live.has_slot = True
                if live.stop_as is None:
                    state, code, error = await self._execute(live)
        except asyncio.CancelledError:
            # Only a queued job is cancelled (stopped, or the server is going); a running one is signalled.
            if live.proc is not None and live.proc.returncode is None:
                _kill_group(live.proc.pid, signal.SIGKILL)
        except Exception:
            log.exception("job %s: unexpected error", live.record.id)
            error = "internal error while running rclone"
        finally:
            if live.stop_as is not None and state != "succeeded":
                state = live.stop_as
                error = {"stopped": "stopped on request",
                         "interrupted": "the sync server shut down before this job finished"}.get(state, error)
            self._finish(live, state, code, error)

    async def _execute(self, live: _Live) -> tuple[str, int | None, str | None]:
        rec = live.record
        try:
            proc = await asyncio.create_subprocess_exec(
                *live.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=_child_env(rec.id), start_new_session=True)
        except OSError:
            return "failed", None, "rclone could not be started (is it installed?)"
        live.proc = proc
        rec.state, rec.started_at, rec.pid = "running", time.time(), proc.pid
        self.store.save(rec)
        if live.stop_as is not None:  # stopped while it was being spawned
            _kill_group(proc.pid, signal.SIGTERM)
        assert proc.stdout is not None
        try:
            with self.log_path(rec.id).open("ab") as logfile:
                await self._pump(live, proc.stdout, logfile)
            code = await proc.wait()
        except BaseException:
            _kill_group(proc.pid, signal.SIGKILL)
            raise
        rec.exit_code = code
        if code == 0:
            return "succeeded", code, None
        if rec.mode == "check" and code == 1:
            report = parse_combined(self.report_path(rec.id))
            # Exit code 1 is how rclone check says "differences found": the check itself worked.
            if report is not None and report.errors == 0 and not report.identical:
                return "succeeded", code, None
        return "failed", code, final_error(live.errors, self.redact) or describe_exit(code)

    async def _pump(self, live: _Live, stream: asyncio.StreamReader, log: IO[bytes]) -> None:
        written = log.tell()
        buf = b""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > _MAX_LINE:
                lines.append(buf[:_MAX_LINE])
                buf = b""
            for raw in lines:
                written += self._take_line(live, raw, log, written)
            log.flush()
        if buf:
            self._take_line(live, buf, log, written)
            log.flush()

    def _take_line(self, live: _Live, raw: bytes, log: IO[bytes], written: int) -> int:
        event = parse_line(raw.decode("utf-8", "replace"))
        if event is None:
            return 0
        if event.stats is not None:
            progress = progress_from_stats(event.stats, self.redact)
            live.record.progress = progress
            for listener in list(live.listeners):
                listener(progress)
        elif event.level in ("error", "critical", "fatal", "warning") or event.message.startswith("Failed"):
            live.errors.append(event)
        keep = written < self.limits.log_soft_cap or (
            written < self.limits.log_hard_cap and event.stats is None and event.level not in ("info", "debug"))
        if not keep:
            return 0
        log.write(raw + b"\n")
        return len(raw) + 1

    def _finish(self, live: _Live, state: str, code: int | None, error: str | None) -> None:
        rec = live.record
        rec.state = state
        rec.ended_at = time.time()
        rec.exit_code = code if code is not None else rec.exit_code
        rec.error = error
        if rec.mode == "check":
            report = parse_combined(self.report_path(rec.id))
            rec.check_summary = report.as_dict() if report is not None else None
        self.store.save(rec)
        self._live.pop(rec.id, None)
        live.done.set()
        for job_id in self.store.prune(self.limits.keep_finished):
            for path in (self.log_path(job_id), self.report_path(job_id)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    async def wait(self, job_id: str, caller: Caller, on_progress: ProgressListener | None = None, *,
                   log_lines: int = 20) -> dict[str, Any]:
        """Wait for the job to end, calling `on_progress` with each stats update; returns its status."""
        _, live = self._record(job_id, caller)
        if live is not None:
            if on_progress is not None:
                live.listeners.append(on_progress)
            try:
                await live.done.wait()
            finally:
                if on_progress is not None:
                    with contextlib.suppress(ValueError):
                        live.listeners.remove(on_progress)
        return self.status(job_id, caller, log_lines=log_lines)

    async def stop(self, job_id: str, caller: Caller, *, as_state: str = "stopped") -> dict[str, Any]:
        """End a queued or running job. A job that already ended is left as it is."""
        rec, live = self._record(job_id, caller)
        if live is not None and rec.state in LIVE_STATES:
            await self._end(live, as_state)
        return self.status(job_id, caller)

    async def _end(self, live: _Live, as_state: str) -> None:
        if live.stop_as is None:
            live.stop_as = as_state
        proc = live.proc
        if proc is None:
            # Past the queue but not yet spawned, it sees stop_as itself; cancelling could orphan a process.
            if live.task is not None and not live.has_slot:
                live.task.cancel()
        elif proc.returncode is None:
            _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(live.done.wait(), self.limits.stop_grace)
        except TimeoutError:
            if live.proc is not None:
                _kill_group(live.proc.pid, signal.SIGKILL)
            await live.done.wait()

    # -- shutdown ------------------------------------------------------------------------------------------

    def begin_shutdown(self) -> asyncio.Task[None]:
        """Refuse new jobs and end the live ones as interrupted. Idempotent; call on the loop."""
        self._closing = True
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown())
        return self._shutdown_task

    async def _shutdown(self) -> None:
        lives = list(self._live.values())
        for live in lives:  # all at once, so no queued job takes the slot of a running one that is ending
            live.stop_as = live.stop_as or "interrupted"
        await asyncio.gather(*(self._end(live, "interrupted") for live in lives))
