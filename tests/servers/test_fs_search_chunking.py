"""Chunking and text extraction, the pure parts of semantic search (no model, no server)."""

from __future__ import annotations

import io
import itertools

import docx
import pytest

from llmbasedos.servers.fs.semantic.chunking import chunk_text, split_lines
from llmbasedos.servers.fs.semantic.extract import Unindexable, extract_text
from tests.servers.test_fs_search_corpus import make_pdf


def test_lines_are_numbered_like_an_editor() -> None:
    assert split_lines("a\r\nb\nc\n") == ["a", "b", "c"]
    assert split_lines("a\n\nb") == ["a", "", "b"]
    assert split_lines("") == []


def test_short_text_is_one_chunk_with_its_line_range() -> None:
    chunks = chunk_text("\n\nfirst line\nsecond line\n\n")
    assert [(c.start_line, c.end_line, c.text) for c in chunks] == [(3, 4, "first line\nsecond line")]


def test_blank_text_has_no_chunks() -> None:
    assert chunk_text(" \n\n\t\n") == []


def test_chunks_overlap_and_cover_every_line() -> None:
    lines = [f"line {i:03d} " + "x" * 40 for i in range(1, 101)]
    chunks = chunk_text("\n".join(lines), max_chars=300, overlap=100)
    assert len(chunks) > 5
    covered = set()
    for chunk in chunks:
        assert len(chunk.text) <= 300
        body = chunk.text.split("\n")
        # The text is exactly the lines the range names.
        assert body == lines[chunk.start_line - 1:chunk.end_line]
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    assert covered == set(range(1, 101))
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start_line <= prev.end_line, "consecutive chunks must share lines"
        assert nxt.start_line > prev.start_line


def test_a_long_line_is_cut_in_overlapping_pieces_of_that_line() -> None:
    text = "short\n" + "".join(f"{i:04d} " for i in range(400)) + "\nend"
    chunks = chunk_text(text, max_chars=200, overlap=50)
    long_pieces = [c for c in chunks if c.start_line == c.end_line == 2]
    assert len(long_pieces) >= 10
    assert all(len(c.text) <= 200 for c in chunks)
    joined = long_pieces[0].text
    for piece in long_pieces[1:]:
        assert piece.text[:50] == joined[-50:]  # the overlap
        joined += piece.text[50:]
    assert joined == text.split("\n")[1]


def test_bad_chunk_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", max_chars=100, overlap=100)


def test_plain_text_and_binary() -> None:
    assert extract_text("a.md", "caf\u00e9\n".encode()).text == "caf\u00e9\n"
    assert extract_text("a.txt", "\ufeffbom".encode()).text == "bom"
    assert extract_text("w.txt", "wide".encode("utf-16")).text == "wide"
    with pytest.raises(Unindexable, match="binary"):
        extract_text("a.bin", b"\x00\x01\x02text")
    with pytest.raises(Unindexable, match="binary"):
        extract_text("latin.txt", bytes(range(128, 256)) * 4)


def test_docx_paragraphs_are_lines_then_tables() -> None:
    document = docx.Document()
    document.add_heading("Title", level=1)
    p = document.add_paragraph("two ")
    p.add_run("runs").bold = True
    document.add_paragraph("")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "left"
    table.rows[0].cells[1].text = "right"
    buf = io.BytesIO()
    document.save(buf)
    out = extract_text("doc.docx", buf.getvalue())
    assert out.kind == "docx"
    assert out.text.split("\n") == ["Title", "two runs", "", "left | right"]
    with pytest.raises(Unindexable, match="docx"):
        extract_text("broken.docx", b"PK\x03\x04 not really a zip")


def test_pdf_text() -> None:
    out = extract_text("paper.pdf", make_pdf(["Hello (PDF) world", "second line"]))
    assert out.kind == "pdf"
    assert out.text.split("\n")[:2] == ["Hello (PDF) world", "second line"]
    with pytest.raises(Unindexable, match="PDF"):
        extract_text("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all")
