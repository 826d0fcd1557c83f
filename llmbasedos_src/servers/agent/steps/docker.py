"""The original `docker` step kind: `docker run --rm` of an allowlisted image, only when enabled.

The command is an argument list given to the docker CLI directly (no shell); the environment is passed
with `-e NAME=value`. Output is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from typing import Any

from llmbasedos.servers.agent.config import AgentConfig
from llmbasedos.servers.agent.steps.http import StepFailed

__all__ = ["run_docker"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_OUTPUT = 1 << 20


async def run_docker(config: AgentConfig, spec: dict[str, Any]) -> Any:
    if not config.docker_enabled:
        raise StepFailed("docker steps are disabled (set docker.enabled in agent.yaml)")
    image = spec.get("image")
    if not isinstance(image, str) or image not in config.docker_images:
        raise StepFailed(f"image {image!r} is not on the agent's docker image allowlist")
    command = spec.get("command", [])
    if isinstance(command, str):
        command = command.split()
    if not isinstance(command, list):
        raise StepFailed("command must be a list of arguments")
    environment = spec.get("environment") or {}
    if not isinstance(environment, dict):
        raise StepFailed("environment must be a mapping")
    argv = ["docker", "run", "--rm", "--network", "none"]
    for name, value in environment.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise StepFailed(f"environment name {name!r} is not valid")
        argv += ["-e", f"{name}={value}"]
    argv += ["--", image, *(str(a) for a in command)]
    if shutil.which("docker") is None:
        raise StepFailed("the docker command is not available on this host")
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    result = {"exit_code": proc.returncode, "stdout": stdout[:_MAX_OUTPUT].decode("utf-8", "replace"),
              "stderr": stderr[:_MAX_OUTPUT].decode("utf-8", "replace")}
    if proc.returncode != 0:
        raise StepFailed(f"the container exited with {proc.returncode}")
    return result
