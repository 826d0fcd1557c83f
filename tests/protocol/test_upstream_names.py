"""Names on our side for an upstream's tool names: valid, deterministic, never two for one or one for two."""

from __future__ import annotations

import re

from llmbasedos.protocol.caps import METHOD_RE
from llmbasedos.protocol.upstream_names import INTERNAL_ACTIONS, MAX_ACTION, action_for, method_for

_ACTION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")


def test_plain_names_are_kept() -> None:
    for name in ("echo", "create_entities", "get-current-time", "A1"):
        assert action_for(name) == name


def test_odd_names_are_mapped_deterministically_into_the_allowed_shape() -> None:
    odd = ["files/read", "a.b", "1st", "_x", "", "ünïcode", "x" * 128, "x" * 49, "weird name!", "\x00nul"]
    for name in odd:
        action = action_for(name)
        assert _ACTION.match(action), (name, action)
        assert len(action) <= MAX_ACTION
        assert action == action_for(name)  # the same every time
        assert METHOD_RE.match(method_for("srv", name))


def test_two_names_that_differ_never_share_an_action() -> None:
    # Cut to the same prefix, or the same once odd characters become "_": the hash keeps them apart.
    pairs = [("a.b", "a/b"), ("x" * 60 + "1", "x" * 60 + "2"), ("a b", "a.b")]
    for left, right in pairs:
        assert action_for(left) != action_for(right)


def test_no_tool_can_take_the_action_of_an_mcp_request() -> None:
    internal = set(INTERNAL_ACTIONS.values())
    for name in ("prompts.list", "resources.read", "prompts.get", "resources.templates"):
        assert action_for(name) not in internal
