"""WebSocket frames (RFC 6455 §5.2) on the hot path: the frame a JSON-RPC door sends and receives all day.

websockets parses a frame through a chain of generators and builds a `Frame` object for it, and serialises one
the same way; at tens of thousands of small messages a second that was a fifth of the gateway's time. This
module reads where a frame ends and writes the one common kind — final, unextended, unfragmented text — in a
few lines. Everything else (control frames, fragments, anything malformed) is left to websockets: callers
hand such a frame to it whole, so its parser always sits on a frame boundary. The unmasking is websockets' own
C routine.
"""

from __future__ import annotations

import os

from websockets.frames import apply_mask

__all__ = ["FINAL_BINARY", "FINAL_TEXT", "apply_mask", "frame_extent", "masked_text_frame", "text_frame"]

FINAL_TEXT = 0x81  # FIN, no RSV bits, opcode 1
FINAL_BINARY = 0x82  # FIN, no RSV bits, opcode 2
MASKED = 0x80


def frame_extent(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
    """(header length, payload length) of the frame starting at `buf[pos]`, or None while its header is not
    all in `buf[pos:end]`. The header length includes the 4-byte masking key when the frame is masked."""
    avail = end - pos
    if avail < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    header = 6 if second & MASKED else 2
    if length == 126:
        header += 2
        if avail < header:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
    elif length == 127:
        header += 8
        if avail < header:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
    elif avail < header:
        return None
    return header, length


def _length_bytes(length: int, masked: int) -> bytes:
    if length < 126:
        return bytes((masked | length,))
    if length < 1 << 16:
        return bytes((masked | 126,)) + length.to_bytes(2, "big")
    return bytes((masked | 127,)) + length.to_bytes(8, "big")


# Most answers are a few hundred bytes: their headers come from a table (4,096 small objects, about 150 KB).
_TABLED = 1 << 12
_TEXT_HEADERS = [b"\x81" + _length_bytes(n, 0) for n in range(_TABLED)]


def text_frame(payload: bytes) -> bytes:
    """A final text frame as a server sends it: unmasked."""
    n = len(payload)
    return (_TEXT_HEADERS[n] if n < _TABLED else b"\x81" + _length_bytes(n, 0)) + payload


class _MaskKeys:
    """Masking keys from the OS's randomness (RFC 6455 §5.3: unpredictable), drawn 4 KiB at a time: a
    system call per thousand frames rather than per frame."""

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        if self._pos + 4 > len(self._pool):
            self._pool, self._pos = os.urandom(4096), 0
        key = self._pool[self._pos:self._pos + 4]
        self._pos += 4
        return key


_mask_keys = _MaskKeys()


def masked_text_frame(payload: bytes) -> bytes:
    """A final text frame as a client sends it: masked with a fresh random key."""
    key = _mask_keys.next()
    return b"\x81" + _length_bytes(len(payload), MASKED) + key + apply_mask(payload, key)
