"""Text out of a file's bytes: plain text and source code, docx (python-docx) and PDF (pypdf).

Each extractor returns text whose lines are what search results number:
- text files: the file's own lines;
- docx: one line per body paragraph, in order (line n is paragraph n-1 of `mcp.fs.read_docx_paragraphs`),
  then the text of table rows;
- PDF: the lines pypdf extracts, page after page.
Files that hold no text (binary data, unreadable documents) raise `Unindexable` with a reason for the report.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass

__all__ = ["Extracted", "Unindexable", "extract_text", "EXTRACTOR_VERSION"]


# Bumped when the text an extractor produces changes, so stored chunks are re-made from the files.
EXTRACTOR_VERSION = 1

_SNIFF = 8192
_MAX_BAD_FRACTION = 0.02  # a few broken bytes in a text file are tolerated, more means it is not text


class Unindexable(Exception):
    """The file cannot give text; `reason` goes into the embed report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Extracted:
    kind: str  # "text", "docx" or "pdf"
    text: str


def extract_text(name: str, data: bytes) -> Extracted:
    lower = name.lower()
    if lower.endswith(".docx"):
        return Extracted("docx", _docx_text(data))
    if lower.endswith(".pdf") or data.startswith(b"%PDF-"):
        return Extracted("pdf", _pdf_text(data))
    return Extracted("text", _plain_text(data))


def _plain_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise Unindexable("binary") from None
    if b"\0" in data[:_SNIFF]:
        raise Unindexable("binary")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    if text.count("\ufffd") > max(1, len(text) * _MAX_BAD_FRACTION):
        raise Unindexable("binary")
    return text


def _docx_text(data: bytes) -> str:
    try:
        import docx
        from docx.opc.exceptions import PackageNotFoundError
    except ImportError:  # python-docx is a core dependency; keep going without docx if it is broken
        raise Unindexable("docx support is not installed") from None
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unindexable(f"not a readable docx file ({type(exc).__name__})") from None
    # A paragraph with soft line breaks stays one line so line numbers keep matching paragraph indexes.
    lines = [" ".join(p.text.split("\n")) for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            cells: list[str] = []
            for cell in row.cells:
                text = " ".join(cell.text.split())
                if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                    cells.append(text)
            if cells:
                lines.append(" | ".join(cells))
    return "\n".join(lines)


def _pdf_text(data: bytes) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise Unindexable("PDF support is not installed") from None
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns loudly about every small flaw
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                reader.decrypt("")
            except Exception:
                raise Unindexable("encrypted PDF") from None
        pages = [page.extract_text() or "" for page in reader.pages]
    except Unindexable:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise Unindexable(f"not a readable PDF file ({type(exc).__name__})") from None
    text = "\n".join(p.rstrip("\n") for p in pages)
    if not text.strip():
        raise Unindexable("PDF without extractable text")
    return text
