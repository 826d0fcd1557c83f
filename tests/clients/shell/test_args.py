"""How luca-shell reads a typed line."""

from __future__ import annotations

import pytest

from llmbasedos.clients.shell.args import is_raw_method, parse_raw_params, parse_value, split_line


def test_key_value_params_keep_types():
    assert parse_raw_params('path=/a.txt length=10 recursive=true extra=null name="two words"') == {
        "path": "/a.txt", "length": 10, "recursive": True, "extra": None, "name": "two words"}


def test_json_params():
    assert parse_raw_params('{"path": "/a"}') == {"path": "/a"}
    assert parse_raw_params('["/a", 3]') == ["/a", 3]
    assert parse_raw_params("  ") is None


@pytest.mark.parametrize("bad", ['{"path": ', "novalue", "=x"])
def test_bad_params_say_what_is_wrong(bad):
    with pytest.raises(ValueError) as info:
        parse_raw_params(bad)
    assert "JSON" in str(info.value) or "key=value" in str(info.value)


def test_raw_method_names():
    assert is_raw_method("mcp.fs.read") and is_raw_method("mcp.llm.chat")
    assert not is_raw_method("ls") and not is_raw_method("mcp") and not is_raw_method("mcp.fs.read;rm")


def test_split_line_and_values():
    assert split_line('search "red apples" 3') == ["search", "red apples", "3"]
    with pytest.raises(ValueError):
        split_line('cat "unclosed')
    assert parse_value("3.5") == 3.5 and parse_value("abc") == "abc"
