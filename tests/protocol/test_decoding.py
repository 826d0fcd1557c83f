"""The one JSON decoder of every door: nesting past the limit is refused with the request's id, nothing else is."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from llmbasedos.protocol import errors
from llmbasedos.protocol.decoding import MAX_DEPTH, decode_json, nesting_depth
from llmbasedos.protocol.framing import NulFrameDecoder
from llmbasedos.protocol.messages import refusal
from tests.support.deep_json import deep_request


def depth_by_recursion(value: Any) -> int:
    """The plain definition, which nesting_depth's iterative walk must match."""
    if isinstance(value, dict):
        return 1 + max((depth_by_recursion(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_by_recursion(v) for v in value), default=0)
    return 0


def random_value(rng: random.Random, budget: int) -> Any:
    kind = rng.random()
    if budget <= 0 or kind < 0.3:
        return rng.choice([1, "s", None, True, 2.5, "[{"])
    if kind < 0.65:
        return [random_value(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": random_value(rng, budget - 1) for i in range(rng.randint(0, 3))}


def test_the_iterative_depth_matches_the_recursive_definition() -> None:
    rng = random.Random(20)
    for _ in range(2000):
        value = random_value(rng, rng.randint(0, 12))
        assert nesting_depth(value) == depth_by_recursion(value)


def test_a_message_at_the_limit_decodes_and_one_past_it_is_refused_with_its_id() -> None:
    assert decode_json(deep_request(MAX_DEPTH))["id"] == 7
    with pytest.raises(errors.NestingTooDeep) as caught:
        decode_json(deep_request(MAX_DEPTH + 1))
    assert caught.value.code == errors.INVALID_REQUEST and caught.value.request_id == 7
    assert f"nested {MAX_DEPTH + 1} levels deep" in caught.value.message
    assert f"the limit is {MAX_DEPTH}" in caught.value.message


@pytest.mark.parametrize("depth", [255, 1100, 50_000])
def test_deeper_than_the_encoder_or_the_decoder_is_refused_with_its_id(depth: int) -> None:
    # 255 decodes but cannot be encoded again; past 1024 orjson does not decode it at all.
    with pytest.raises(errors.NestingTooDeep) as caught:
        decode_json(deep_request(depth, rid="req-1"))
    assert caught.value.request_id == "req-1"
    assert refusal(caught.value)["id"] == "req-1" and refusal(caught.value)["error"]["code"] == -32600


def test_without_a_readable_id_the_refusal_answers_id_null() -> None:
    deep = b'{"params":' + b"[" * 2000 + b"]" * 2000 + b',"id":3}'  # the id comes after the deep member
    with pytest.raises(errors.NestingTooDeep) as caught:
        decode_json(deep)
    assert refusal(caught.value)["id"] is None
    with pytest.raises(errors.NestingTooDeep) as batch:
        decode_json(b"[" * 300 + b"]" * 300)
    assert batch.value.request_id is None


def test_brackets_inside_strings_are_text_not_nesting() -> None:
    text = "[{" * 5000
    value = decode_json(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"text": text}}))
    assert value["params"]["text"] == text


def test_bad_json_and_bad_utf8_stay_parse_errors() -> None:
    with pytest.raises(errors.ParseError, match="not valid JSON"):
        decode_json(b'{"id": 1,')
    with pytest.raises(errors.ParseError, match="UTF-8"):
        decode_json(b'"\xff"')


def test_the_nul_decoder_reports_a_deep_frame_and_goes_on() -> None:
    decoder = NulFrameDecoder()
    frames = decoder.receive_data(deep_request(300) + b"\0" + b'{"jsonrpc":"2.0","id":8,"method":"m"}\0')
    assert isinstance(frames[0].error, errors.NestingTooDeep) and frames[0].error.request_id == 7
    assert frames[1].error is None and frames[1].value["id"] == 8
