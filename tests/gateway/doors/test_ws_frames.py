"""The hot-path WebSocket frames agree with websockets, byte for byte, for every length class."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from llmbasedos.gateway.doors.ws_frames import frame_extent, masked_text_frame, text_frame

LENGTHS = [0, 1, 125, 126, 127, 4095, 4096, 65535, 65536, 70000]  # every header class, and the table's edge


def _parse(data: bytes, *, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("websockets wanted more bytes than the frame has")


@pytest.mark.parametrize("n", LENGTHS)
def test_server_frames_are_what_websockets_writes(n: int) -> None:
    payload = b"x" * n
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert frame_extent(text_frame(payload), 0, len(text_frame(payload))) == (len(text_frame(payload)) - n, n)


@pytest.mark.parametrize("n", LENGTHS)
def test_client_frames_are_masked_with_fresh_keys_and_parse_back(n: int) -> None:
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    frames = [masked_text_frame(payload) for _ in range(3)]
    for data in frames:
        frame = _parse(data, mask=True)
        assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload
        header, length = frame_extent(data, 0, len(data)) or (0, 0)
        assert length == n and header + n == len(data)
    keys = {data[len(data) - n - 4:len(data) - n] for data in frames}
    assert len(keys) == 3  # each frame its own key (the chance of a repeat among three is about 1e-9)


def test_many_keys_keep_coming_past_the_pool() -> None:
    keys = {masked_text_frame(b"{}")[2:6] for _ in range(3000)}  # the pool holds 1024 keys
    assert len(keys) > 2990


def test_frame_extent_waits_for_the_whole_header() -> None:
    data = masked_text_frame(b"y" * 70000)  # 2 + 8 length bytes + 4 key bytes
    for cut in range(14):
        assert frame_extent(data, 0, cut) is None, cut
    assert frame_extent(data, 0, 14) == (14, 70000)
    assert frame_extent(b"pad" + data, 3, 3 + 14) == (14, 70000)  # and from an offset
