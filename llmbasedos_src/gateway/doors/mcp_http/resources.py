"""Files under the fs server's virtual root as MCP resources.

A file's URI is `llmbasedos://fs/<virtual path>` (segments percent-encoded), e.g. `llmbasedos://fs/notes/a.md`
for the fs server's `/notes/a.md`. The URI names a path inside the virtual root, never a host path, and a
dedicated scheme keeps hosts from mistaking it for a file of their own machine. Listing walks the tree with
`mcp.fs.list` down to `MAX_DEPTH` directories and at most `MAX_ENTRIES` files; reading goes through
`mcp.fs.read`, so every confinement rule of the fs server applies, and the client's rights are checked by the
router exactly as for a tool call.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from llmbasedos.gateway.doors.mcp_http.tools import PAGE_SIZE, decode_cursor, encode_cursor
from llmbasedos.protocol import errors

__all__ = ["URI_PREFIX", "TEMPLATE", "uri_of", "path_of", "list_resources", "read_resource", "templates",
           "RESOURCE_NOT_FOUND"]

URI_PREFIX = "llmbasedos://fs/"
TEMPLATE = {"uriTemplate": "llmbasedos://fs/{+path}", "name": "file",
            "title": "A file under the virtual root",
            "description": "Any file under the llmbasedos virtual root, by its path inside the root"}
MAX_DEPTH = 3
MAX_ENTRIES = 2000
RESOURCE_NOT_FOUND = -32602  # SEP-2164: an unknown resource is Invalid Params, with the URI in data
LIST_METHOD = "mcp.fs.list"
READ_METHOD = "mcp.fs.read"

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


def uri_of(vpath: str) -> str:
    return URI_PREFIX + quote(vpath.lstrip("/"), safe="/")


def path_of(uri: Any) -> str:
    """The virtual path a resource URI names; InvalidParams for anything that is not one of ours."""
    if not isinstance(uri, str) or not uri:
        raise errors.InvalidParams("uri must be a non-empty string")
    if not uri.startswith(URI_PREFIX):
        raise errors.RPCError(f"Resource not found: {uri[:200]}", {"uri": uri[:200]}, code=RESOURCE_NOT_FOUND)
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise errors.InvalidParams("a resource URI takes no query or fragment")
    path = unquote(uri[len(URI_PREFIX):])
    if not path or "\x00" in path:
        raise errors.InvalidParams("the resource URI names no file")
    return "/" + path


def _descriptor(entry: dict[str, Any]) -> dict[str, Any]:
    vpath = str(entry.get("path") or "")
    name = str(entry.get("name") or vpath.rsplit("/", 1)[-1])
    out: dict[str, Any] = {"uri": uri_of(vpath), "name": name, "title": vpath,
                           "description": f"File {vpath} under the llmbasedos virtual root"}
    mime, _ = mimetypes.guess_type(name)
    if mime:
        out["mimeType"] = mime
    size = entry.get("size")
    if isinstance(size, int) and size >= 0:
        out["size"] = size
    return out


async def _walk(call: Call) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    level = ["/"]
    for _depth in range(MAX_DEPTH + 1):
        below: list[str] = []
        for directory in level:
            try:
                entries = await call(LIST_METHOD, {"path": directory})
            except (errors.NotFound, errors.PathOutsideRoot, errors.Forbidden):
                continue  # vanished or unreadable since its parent was listed
            if not isinstance(entries, list):
                continue
            for entry in sorted((e for e in entries if isinstance(e, dict)), key=lambda e: str(e.get("path"))):
                kind = entry.get("type")
                if kind == "file":
                    files.append(_descriptor(entry))
                    if len(files) >= MAX_ENTRIES:
                        return files
                elif kind == "directory" and isinstance(entry.get("path"), str):
                    below.append(entry["path"])
        level = below
        if not level:
            break
    return files


async def list_resources(call: Call, cursor: Any) -> dict[str, Any]:
    files = await _walk(call)
    start = decode_cursor(cursor, len(files))
    end = start + PAGE_SIZE
    result: dict[str, Any] = {"resources": files[start:end]}
    if end < len(files):
        result["nextCursor"] = encode_cursor(end)
    return result


async def read_resource(call: Call, uri: Any) -> dict[str, Any]:
    vpath = path_of(uri)
    try:
        got = await call(READ_METHOD, {"path": vpath, "encoding": "base64"})
    except errors.NotFound:
        raise errors.RPCError(f"Resource not found: {uri}", {"uri": uri}, code=RESOURCE_NOT_FOUND) from None
    if not isinstance(got, dict) or not isinstance(got.get("content"), str):
        raise errors.InternalError("the fs server answered an unexpected shape")
    try:
        raw = base64.b64decode(got["content"], validate=True)
    except (binascii.Error, ValueError):
        raise errors.InternalError("the fs server answered an unexpected shape") from None
    mime = got.get("mime_type") or mimetypes.guess_type(vpath)[0] or "application/octet-stream"
    item: dict[str, Any] = {"uri": uri, "mimeType": mime}
    try:
        item["text"] = raw.decode("utf-8")
        if mime == "application/octet-stream":
            item["mimeType"] = "text/plain"
    except UnicodeDecodeError:
        item["blob"] = got["content"]
    return {"contents": [item]}


def templates() -> dict[str, Any]:
    return {"resourceTemplates": [TEMPLATE]}
