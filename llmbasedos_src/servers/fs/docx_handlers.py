"""`mcp.fs.read_docx_paragraphs` and `mcp.fs.update_docx_paragraphs` (python-docx), as a mixin of the fs server.

Compatible with the original llmbasedos methods: positional `[path]` and `[path, [{"index", "new_text"}]]`
still work; `text` is accepted as well as `new_text`. An update keeps each paragraph's style and the
formatting of its first run (the replaced text takes that run's look), and replaces the file atomically: the
new document is written next to it and renamed over it, so a reader sees the old file or the new one.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat as stat_mod
from pathlib import Path
from typing import Any, ClassVar

from llmbasedos.backend.confinement import Located, VirtualRoot
from llmbasedos.backend.server import CallContext, method
from llmbasedos.backend.special_files import open_at
from llmbasedos.protocol.errors import InvalidParams, PayloadTooLarge
from llmbasedos.settings import Settings

__all__ = ["DocxHandlers", "read_paragraphs", "apply_updates"]

DEFAULT_MAX_DOCX_BYTES = 64 * 1024 * 1024
# XML 1.0 forbids these characters; lxml would refuse them halfway through an update.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _max_docx_bytes() -> int:
    try:
        value = int(os.environ.get("LLMBDO_FS_DOCX_MAX_BYTES", ""))
    except ValueError:
        return DEFAULT_MAX_DOCX_BYTES
    return value if value > 0 else DEFAULT_MAX_DOCX_BYTES


def _open_document(data: bytes, vpath: str) -> Any:
    import docx

    try:
        return docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx, zipfile and lxml each have their own ways to say "broken"
        raise InvalidParams(f"Not a valid .docx file: {vpath}") from exc


def read_paragraphs(document: Any) -> list[dict[str, Any]]:
    return [{"index": i, "text": p.text, "style": p.style.name if p.style is not None else None}
            for i, p in enumerate(document.paragraphs)]


def _set_paragraph_text(paragraph: Any, text: str) -> None:
    from docx.oxml.ns import qn

    runs = paragraph.runs
    keep = runs[0]._r if runs else None
    # Text lives in direct runs and in runs nested in hyperlinks, tracked insertions, fields: all of it goes.
    containers = {qn("w:r"), qn("w:hyperlink"), qn("w:ins"), qn("w:smartTag"), qn("w:fldSimple"),
                  qn("w:sdt")}
    p_el = paragraph._p
    for child in list(p_el):
        if child.tag in containers and child is not keep:
            p_el.remove(child)
    if runs:
        runs[0].text = text  # the setter keeps the run's properties and turns \n and \t into breaks and tabs
    else:
        paragraph.add_run(text)


def apply_updates(document: Any, updates: list[dict[str, Any]]) -> int:
    """Check every update first, then apply them all: an invalid one changes nothing."""
    paragraphs = document.paragraphs
    seen: set[int] = set()
    planned: list[tuple[int, str]] = []
    for i, upd in enumerate(updates):
        index = upd["index"]
        text = upd["text"] if "text" in upd else upd["new_text"]
        if index >= len(paragraphs):
            raise InvalidParams(f"updates[{i}].index {index} is out of range: the document has "
                                f"{len(paragraphs)} paragraphs")
        if index in seen:
            raise InvalidParams(f"updates[{i}].index {index} appears more than once")
        if _NOT_XML.search(text):
            raise InvalidParams(f"updates[{i}] text contains control characters a document cannot hold")
        seen.add(index)
        planned.append((index, text))
    for index, text in planned:
        _set_paragraph_text(paragraphs[index], text)
    return len(planned)


class DocxHandlers:
    caps_fragment: ClassVar[Path | None] = Path(__file__).with_name("docx_caps.json")

    settings: Settings

    def _docx_root(self) -> VirtualRoot:
        root = getattr(self, "vroot", None)
        if isinstance(root, VirtualRoot):
            return root
        own: VirtualRoot | None = getattr(self, "_docx_own_root", None)
        if own is None:
            own = VirtualRoot(self.settings.virtual_root)
            self._docx_own_root = own
        return own

    @staticmethod
    def _read_regular(loc: Located) -> tuple[bytes, os.stat_result]:
        """The document's bytes and fstat; never opens (nor waits on) a FIFO, socket or device."""
        fd, st = open_at(loc.dir_fd, loc.name, os.O_RDONLY, loc.vpath, st=loc.st)
        try:
            limit = _max_docx_bytes()
            if st.st_size > limit:
                raise PayloadTooLarge(f"{loc.vpath} is larger than the {limit}-byte limit for documents")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise PayloadTooLarge(f"{loc.vpath} is larger than the {limit}-byte limit for documents")
        return data, st

    @method("mcp.fs.read_docx_paragraphs")
    def fs_read_docx_paragraphs(self, params: dict[str, Any], ctx: CallContext) -> Any:
        root = self._docx_root()
        with root.locate(params["path"]) as loc:
            data, _ = self._read_regular(loc)
            return read_paragraphs(_open_document(data, loc.vpath))

    @method("mcp.fs.update_docx_paragraphs")
    def fs_update_docx_paragraphs(self, params: dict[str, Any], ctx: CallContext) -> Any:
        root = self._docx_root()
        with root.locate(params["path"]) as loc:
            data, st = self._read_regular(loc)
            document = _open_document(data, loc.vpath)
            count = apply_updates(document, params["updates"])
            out = io.BytesIO()
            document.save(out)
            tmp = f".{loc.name[:200]}.{secrets.token_hex(6)}.tmp"
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          stat_mod.S_IMODE(st.st_mode), dir_fd=loc.dir_fd)
            try:
                try:
                    view = memoryview(out.getbuffer())
                    while view:
                        view = view[os.write(tfd, view):]
                    os.fchmod(tfd, stat_mod.S_IMODE(st.st_mode))
                    os.fsync(tfd)
                finally:
                    os.close(tfd)
                os.replace(tmp, loc.name, src_dir_fd=loc.dir_fd, dst_dir_fd=loc.dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=loc.dir_fd)
                except FileNotFoundError:
                    pass
                raise
            return {"path": loc.vpath, "updated": count, "paragraphs": len(document.paragraphs),
                    "status": "success"}
