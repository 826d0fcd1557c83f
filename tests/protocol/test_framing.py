"""The NUL framing codec, byte for byte."""

from __future__ import annotations

import orjson
import pytest

from llmbasedos.protocol import errors
from llmbasedos.protocol.framing import NulFrameDecoder, decode_json, encode_frame


def values(frames):
    assert all(f.error is None for f in frames), [f.error for f in frames]
    return [f.value for f in frames]


def test_encode_is_compact_json_plus_one_nul():
    assert encode_frame({"jsonrpc": "2.0", "id": 1, "result": "ok"}) == b'{"jsonrpc":"2.0","id":1,"result":"ok"}\x00'


def test_encode_escapes_nul_inside_strings():
    data = encode_frame({"s": "a\x00b"})
    assert data.count(b"\x00") == 1 and data.endswith(b"\x00")
    assert b"\\u0000" in data


def test_encode_non_ascii_is_utf8():
    assert encode_frame("é€") == "\"é€\"".encode() + b"\x00"


def test_round_trip_unicode_and_nesting():
    msg = {"a": ["x", 1, 2.5, None, True, {"é": "日本"}]}
    dec = NulFrameDecoder()
    assert values(dec.receive_data(encode_frame(msg))) == [msg]


def test_one_frame_split_at_every_byte():
    data = encode_frame({"jsonrpc": "2.0", "method": "m", "params": {"k": "vé"}})
    for cut in range(len(data) + 1):
        dec = NulFrameDecoder()
        got = values(dec.receive_data(data[:cut])) + values(dec.receive_data(data[cut:]))
        assert got == [{"jsonrpc": "2.0", "method": "m", "params": {"k": "vé"}}], cut
        assert dec.buffered == 0


def test_byte_by_byte_feed():
    data = encode_frame([1, 2]) + encode_frame({"b": 3})
    dec = NulFrameDecoder()
    out = []
    for i in range(len(data)):
        out += values(dec.receive_data(data[i : i + 1]))
    assert out == [[1, 2], {"b": 3}]


def test_many_frames_in_one_read():
    data = b"".join(encode_frame({"i": i}) for i in range(100))
    assert values(NulFrameDecoder().receive_data(data)) == [{"i": i} for i in range(100)]


def test_empty_frames_are_skipped():
    dec = NulFrameDecoder()
    assert dec.receive_data(b"\x00\x00\x00") == []
    assert values(dec.receive_data(b'\x001\x00\x00"x"\x00')) == [1, "x"]


def test_partial_frame_stays_buffered():
    dec = NulFrameDecoder()
    assert dec.receive_data(b'{"a":') == []
    assert dec.buffered == 5
    assert values(dec.receive_data(b"1}\x00")) == [{"a": 1}]


def test_invalid_utf8_is_a_parse_error_and_stream_continues():
    dec = NulFrameDecoder()
    frames = dec.receive_data(b'"\xff\xfe"\x00{"ok":1}\x00')
    assert isinstance(frames[0].error, errors.ParseError)
    assert frames[0].error.code == errors.PARSE_ERROR
    assert "UTF-8" in frames[0].error.message
    assert frames[1].value == {"ok": 1}


def test_invalid_json_is_a_parse_error():
    frames = NulFrameDecoder().receive_data(b"{not json}\x00[1,\x00")
    assert [type(f.error) for f in frames] == [errors.ParseError, errors.ParseError]
    assert "JSON" in frames[0].error.message


def test_oversize_frame_reported_once_and_skipped():
    dec = NulFrameDecoder(max_frame=10)
    frames = dec.receive_data(b'"' + b"a" * 20)
    assert len(frames) == 1 and isinstance(frames[0].error, errors.FrameTooLarge)
    assert frames[0].error.code == errors.FRAME_TOO_LARGE
    # The rest of the huge frame is discarded without another report...
    assert dec.receive_data(b"a" * 50) == []
    # ... until its NUL, after which the stream is in sync again.
    assert values(dec.receive_data(b'aaa"\x00[1]\x00')) == [[1]]
    assert dec.buffered == 0


def test_oversize_frame_complete_in_one_read():
    dec = NulFrameDecoder(max_frame=8)
    frames = dec.receive_data(b'"0123456789"\x00"ok"\x00')
    assert isinstance(frames[0].error, errors.FrameTooLarge)
    assert frames[1].value == "ok"


def test_frame_exactly_at_cap_is_accepted():
    payload = b'"' + b"a" * 8 + b'"'
    assert values(NulFrameDecoder(max_frame=10).receive_data(payload + b"\x00")) == ["a" * 8]
    dec = NulFrameDecoder(max_frame=10)
    assert dec.receive_data(payload[:4]) == [] and values(dec.receive_data(payload[4:] + b"\x00")) == ["a" * 8]


def test_oversize_across_split_reads():
    dec = NulFrameDecoder(max_frame=10)
    assert dec.receive_data(b'"abcdef') == []
    frames = dec.receive_data(b'ghijkl"\x00')
    assert len(frames) == 1 and isinstance(frames[0].error, errors.FrameTooLarge)
    assert values(dec.receive_data(b"2\x00")) == [2]


def test_batch_and_notification_frames_decode_as_values():
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "a"}, {"jsonrpc": "2.0", "method": "n"}]
    assert values(NulFrameDecoder().receive_data(encode_frame(batch))) == [batch]


def test_decode_json_direct():
    assert decode_json(b"[]") == []
    with pytest.raises(errors.ParseError):
        decode_json(b"")


def test_max_frame_must_be_positive():
    with pytest.raises(ValueError):
        NulFrameDecoder(max_frame=0)


def test_whole_frames_agrees_with_receive_data_or_declines():
    """The quick path gives the same frames as the general one, and declines whenever it could not."""
    frames = [encode_frame({"i": i}) for i in range(5)]
    stream = frames[0] + b"\x00" + b"".join(frames[1:])  # a keep-alive among them
    cap = len(frames[0]) + 2
    for data in (stream, frames[0], b"\x00\x00"):
        quick = NulFrameDecoder().whole_frames(data)
        assert quick is not None
        assert [orjson.loads(p) for p in quick if p] == values(NulFrameDecoder().receive_data(data))
    # Payloads as they came: decoding them is the caller's part.
    assert NulFrameDecoder().whole_frames(b"{bad json}\x00" + frames[1]) == [b"{bad json}", frames[1][:-1]]
    dec = NulFrameDecoder(max_frame=cap)
    assert dec.whole_frames(frames[0][:-3]) is None  # a frame not complete
    dec.receive_data(frames[0][:-3])
    assert dec.whole_frames(frames[0][-3:]) is None  # the rest of a buffered frame: only receive_data joins it
    assert values(dec.receive_data(frames[0][-3:])) == [{"i": 0}]
    assert dec.whole_frames(stream) is None  # longer than the cap: a frame in it might be over it
    big = NulFrameDecoder(max_frame=cap)
    big.receive_data(b"x" * (cap + 5))  # now discarding an oversize frame up to its NUL
    assert big.whole_frames(frames[1]) is None
