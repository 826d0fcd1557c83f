"""Split text into overlapping chunks that remember the lines they came from.

Chunks are built from whole lines up to `max_chars`; the next chunk starts a few lines back so a sentence cut at
a boundary is still whole in one of the two. A line longer than `max_chars` is cut into overlapping pieces that
all carry that line's number. Line numbers are 1-based and count "\\n"-separated lines, as editors do.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Chunk", "chunk_text", "split_lines", "MAX_CHARS", "OVERLAP_CHARS"]

# all-MiniLM-L6-v2 reads at most 256 word pieces (~1,000 characters of English) and was trained on much shorter
# inputs: chunks of ~600 characters keep each one inside the window and specific enough to rank well.
MAX_CHARS = 600
OVERLAP_CHARS = 150


@dataclass(frozen=True, slots=True)
class Chunk:
    start_line: int
    end_line: int
    text: str


def split_lines(text: str) -> list[str]:
    """Lines as an editor numbers them ("\\r\\n" and "\\n" end a line; a final newline adds no line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _segments(lines: list[str], max_chars: int, overlap: int) -> list[tuple[int, str]]:
    segs: list[tuple[int, str]] = []
    step = max(1, max_chars - overlap)
    for number, line in enumerate(lines, 1):
        if len(line) <= max_chars:
            segs.append((number, line))
            continue
        start = 0
        while True:
            segs.append((number, line[start:start + max_chars]))
            if start + max_chars >= len(line):
                break
            start += step
    return segs


def chunk_text(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Overlapping chunks of `text`; chunks that hold only blank lines are dropped."""
    if max_chars <= 0 or not 0 <= overlap < max_chars:
        raise ValueError("need max_chars > 0 and 0 <= overlap < max_chars")
    segs = _segments(split_lines(text), max_chars, overlap)
    chunks: list[Chunk] = []
    start = 0
    while start < len(segs):
        end = start
        size = 0
        while end < len(segs) and (end == start or size + len(segs[end][1]) + 1 <= max_chars):
            size += len(segs[end][1]) + 1
            end += 1
        # Trim blank segments at both ends so the line range points at the words themselves.
        lo, hi = start, end
        while lo < hi and not segs[lo][1].strip():
            lo += 1
        while hi > lo and not segs[hi - 1][1].strip():
            hi -= 1
        if lo < hi:
            chunk = Chunk(segs[lo][0], segs[hi - 1][0], "\n".join(s for _, s in segs[lo:hi]))
            if not chunks or chunks[-1] != chunk:
                chunks.append(chunk)
        if end >= len(segs):
            break
        back = end
        carried = 0
        while back - 1 > start and carried + len(segs[back - 1][1]) + 1 <= overlap:
            back -= 1
            carried += len(segs[back][1]) + 1
        start = back
    return chunks
