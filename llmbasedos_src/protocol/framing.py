"""Sans-I/O NUL framing: bytes in -> decoded JSON values out; a message in -> bytes out.

One JSON text per frame, each frame terminated by a single NUL byte. JSON never contains a raw NUL (control
characters are always escaped), so NUL is a safe delimiter. The asyncio code only pumps bytes through this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmbasedos.protocol.decoding import MAX_DEPTH, decode_json
from llmbasedos.protocol.errors import FrameTooLarge, InternalError, NestingTooDeep, ParseError, RPCError

__all__ = ["DEFAULT_MAX_FRAME", "Frame", "NulFrameDecoder", "encode_answer", "encode_frame", "decode_json"]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_NUL = b"\0"


@dataclass(slots=True)  # not frozen: one is built per frame, and frozen ones cost three times as much
class Frame:
    """One received frame: either a decoded JSON value or the error that stopped its decoding."""

    value: Any = None
    error: RPCError | None = None


def encode_answer(message: Any, end: bytes = b"") -> tuple[bytes, bool]:
    """An answer's bytes followed by `end` (NUL on the sockets, nothing on /ws), and True. When it cannot be
    encoded (a result that is not JSON: a handler's bug), the InternalError answer to the same id, and False:
    the caller logs it."""
    try:
        return orjson.dumps(message) + end, True
    except TypeError:
        rid = message.get("id") if isinstance(message, dict) else None
        error = InternalError("Result is not JSON-serialisable").to_error()
        return orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": error}) + end, False


def encode_frame(message: Any) -> bytes:
    """Serialise one message (or batch) to a frame, NUL included."""
    return orjson.dumps(message) + _NUL


class NulFrameDecoder:
    """Accumulates bytes and yields whole frames.

    Empty frames (two NULs in a row) are keep-alives and are skipped. A frame that grows past `max_frame` is
    reported once as FrameTooLarge and its bytes are discarded up to its terminating NUL, so one bad frame
    never desynchronises the stream. A frame nested deeper than `max_depth` is reported as NestingTooDeep
    (see `decoding`).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_depth: int = MAX_DEPTH) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.max_depth = max_depth
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def whole_frames(self, data: bytes) -> list[bytes] | None:
        """The payloads in `data` when it holds whole frames only and nothing is buffered (the usual read),
        else None: then `receive_data` must take it. Keep-alives come out as empty payloads. A caller that
        only wants the values skips the Frame objects and the error bookkeeping of `receive_data`."""
        if self._buf or self._discarding or len(data) > self.max_frame or not data.endswith(_NUL):
            return None
        payloads = data.split(_NUL)
        payloads.pop()  # what follows the last NUL: nothing
        return payloads

    def receive_data(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(_NUL, start)
            if end < 0:
                self._append_partial(data, start, n, frames)
                break
            if self._discarding:
                self._discarding = False
                self._buf.clear()
            else:
                size = len(self._buf) + (end - start)
                if size > self.max_frame:
                    frames.append(Frame(error=self._too_large()))
                    self._buf.clear()
                elif self._buf:
                    self._buf += data[start:end]
                    frames.append(self._decode(bytes(self._buf)))
                    self._buf.clear()
                elif end > start:
                    frames.append(self._decode(data[start:end]))
            start = end + 1
        return frames

    def _append_partial(self, data: bytes, start: int, n: int, frames: list[Frame]) -> None:
        if self._discarding:
            return
        if len(self._buf) + (n - start) > self.max_frame:
            frames.append(Frame(error=self._too_large()))
            self._buf.clear()
            self._discarding = True
            return
        self._buf += data[start:n]

    def _too_large(self) -> FrameTooLarge:
        return FrameTooLarge(f"Frame exceeds the {self.max_frame}-byte limit")

    def _decode(self, payload: bytes) -> Frame:
        try:
            return Frame(value=decode_json(payload, self.max_depth))
        except (ParseError, NestingTooDeep) as exc:
            return Frame(error=exc)
