"""The parts of uvicorn's sans-I/O WebSocket protocol that the /ws direct lane extends are still there.

uvicorn documents none of them, so it is pinned to one minor version; when a new one is tried, this test
says what moved before any connection misbehaves.
"""

from __future__ import annotations

import inspect
import re

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from llmbasedos.gateway.doors.ws_protocol import UVICORN_ATTRIBUTES, UVICORN_METHODS, DirectWebSocketProtocol


def _assigned(cls: type) -> set[str]:
    """The attributes `cls` assigns on self anywhere in its source (its __init__, its handshake...)."""
    source = inspect.getsource(cls)
    return set(re.findall(r"\bself\.([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source))


def test_the_attributes_the_lane_reads_are_set_by_uvicorn() -> None:
    missing = sorted(set(UVICORN_ATTRIBUTES) - _assigned(WebSocketsSansIOProtocol))
    assert not missing, (f"uvicorn {uvicorn.__version__} no longer sets {missing} on WebSocketsSansIOProtocol: "
                         "gateway/doors/ws_protocol.py reads them; adapt it before moving the pin in pyproject.toml")


def test_the_methods_the_lane_extends_are_uvicorns() -> None:
    missing = [m for m in UVICORN_METHODS if not callable(getattr(WebSocketsSansIOProtocol, m, None))]
    assert not missing, f"uvicorn {uvicorn.__version__}: WebSocketsSansIOProtocol lost {missing}"
    for name in UVICORN_METHODS:
        ours = getattr(DirectWebSocketProtocol, name)
        theirs = getattr(WebSocketsSansIOProtocol, name)
        if ours is not theirs:  # overridden here: the signature must still fit the one uvicorn calls
            assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name


def test_the_list_names_every_uvicorn_attribute_the_module_uses() -> None:
    # Every `self.x` the lane touches is either its own (assigned in it) or on the list above.
    source = inspect.getsource(DirectWebSocketProtocol)
    used = set(re.findall(r"\bself\.([A-Za-z_]\w*)", source))
    own = _assigned(DirectWebSocketProtocol) - set(UVICORN_ATTRIBUTES)
    methods = {n for n, _ in inspect.getmembers(DirectWebSocketProtocol, callable)}
    unlisted = sorted(used - own - methods - set(UVICORN_ATTRIBUTES))
    assert not unlisted, f"ws_protocol.py uses uvicorn's {unlisted}: add them to UVICORN_ATTRIBUTES"
