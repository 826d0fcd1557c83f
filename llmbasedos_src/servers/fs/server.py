"""The fs server: files inside the virtual root (`LLMBDO_VIRTUAL_ROOT`), over the backend protocol.

    LLMBDO_VIRTUAL_ROOT   the directory exposed as "/" (created if missing)
    LLMBDO_FS_MAX_READ    largest read in bytes (default 10 MiB)
    LLMBDO_FS_MAX_WRITE   largest write in bytes (default 10 MiB)

Handlers are plain functions: they run in the framework's thread pool, so blocking file I/O never stalls
the event loop. `stat` (a few fd-relative syscalls, microseconds) runs inline on the loop instead: the hop to
a worker thread cost several times the stat itself. The operations themselves live in `ops.py`, the
confinement in `common_utils.VirtualRoot`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llmbasedos.backend.confinement import VirtualRoot
from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.servers.fs.docx_handlers import DocxHandlers
from llmbasedos.servers.fs.ops import DEFAULT_MAX_READ, DEFAULT_MAX_WRITE, FileOps
from llmbasedos.servers.fs.search_handlers import SearchHandlers
from llmbasedos.settings import Settings

__all__ = ["FSServer"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of bytes")
    return value


class FSServer(SearchHandlers, DocxHandlers, MCPServer):
    service_name = "fs"
    caps_file = Path(__file__).with_name("caps.json")

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.vroot = VirtualRoot(self.settings.virtual_root)
        self.ops = FileOps(self.vroot, max_read=_env_int("LLMBDO_FS_MAX_READ", DEFAULT_MAX_READ),
                           max_write=_env_int("LLMBDO_FS_MAX_WRITE", DEFAULT_MAX_WRITE))

    @method("mcp.fs.list")
    def fs_list(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.list(params.get("path", "/"))

    @method("mcp.fs.stat", inline=True)
    def fs_stat(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.stat(params["path"], params.get("follow_symlinks", True))

    @method("mcp.fs.read")
    def fs_read(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.read(params["path"], params.get("encoding", "text"), params.get("offset", 0),
                             params.get("length"))

    @method("mcp.fs.write")
    def fs_write(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.write(params["path"], params["content"], params.get("encoding", "text"),
                              params.get("append", False), params.get("create_parents", False))

    @method("mcp.fs.mkdir")
    def fs_mkdir(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.mkdir(params["path"], params.get("parents", False), params.get("exist_ok", False))

    @method("mcp.fs.move")
    def fs_move(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.move(params["source"], params["destination"], params.get("overwrite", False),
                             params.get("create_parents", False))

    @method("mcp.fs.copy")
    def fs_copy(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.copy(params["source"], params["destination"], params.get("overwrite", False),
                             params.get("create_parents", False), progress=ctx.progress)

    @method("mcp.fs.delete")
    def fs_delete(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return self.ops.delete(params["path"], params.get("recursive", False))
