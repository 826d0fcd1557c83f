"""The program registry: availability predicates and readiness checks, against real files and a real HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmbasedos.appliance.programs import (
    PROGRAMS,
    CapFileReady,
    HttpReady,
    Program,
    available_programs,
    get_program,
    module_exists,
    shipped_programs,
)
from llmbasedos.appliance.supervisor_config import Layout


def _layout(tmp: Path, port: int = 8000) -> Layout:
    return Layout.for_state_dir(tmp, gateway_port=port)


def test_registry_names_are_unique_and_known() -> None:
    names = [p.name for p in PROGRAMS]
    assert len(names) == len(set(names))
    assert {"gateway", "fs", "sync", "mail", "agent", "llm-local"} <= set(names)
    assert get_program("fs").module == "llmbasedos.servers.fs"
    with pytest.raises(KeyError):
        get_program("nope")


def test_backends_start_before_the_gateway() -> None:
    gateway = get_program("gateway")
    assert all(p.priority < gateway.priority for p in PROGRAMS if p is not gateway)


def test_a_program_whose_module_is_missing_is_left_out() -> None:
    ghost = Program(name="ghost", module="llmbasedos.servers.ghost_not_written", description="", priority=1,
                    ready=CapFileReady("ghost"))
    assert not ghost.shipped()
    assert not ghost.available()
    assert available_programs((ghost,)) == []
    assert not module_exists("no_such_top_level_package_xyz.sub")


def test_a_package_without_main_is_not_shipped() -> None:
    # An empty server package (code not written yet) cannot be run with `python -m`.
    empty = Program(name="servers", module="llmbasedos.servers", description="", priority=1,
                    ready=CapFileReady("servers"))
    assert empty.is_package
    assert empty.main_module == "llmbasedos.servers.__main__"
    assert not empty.shipped()


def test_a_runnable_module_joins_and_requires_gate_availability() -> None:
    plain = Program(name="x", module="http.server", description="", priority=1, ready=CapFileReady("x"))
    assert plain.shipped() and plain.available()
    needs_extra = Program(name="y", module="http.server", description="", priority=1, ready=CapFileReady("y"),
                          requires=("no_such_extra_module_xyz",))
    assert needs_extra.shipped()
    assert not needs_extra.available()
    assert shipped_programs((plain, needs_extra)) == [plain, needs_extra]
    assert available_programs((plain, needs_extra)) == [plain]


def test_fs_is_shipped_with_its_caps_file() -> None:
    fs = get_program("fs")
    if not fs.shipped():
        pytest.skip("the fs server is not written yet")
    caps = fs.caps_file()
    assert caps is not None and caps.is_file()
    assert json.loads(caps.read_text())["service_name"] == "fs"


@pytest.fixture
def run_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbd-", dir="/tmp"))
    (path / "run").mkdir()
    yield path
    for f in (path / "run").iterdir():
        f.unlink()
    (path / "run").rmdir()
    path.rmdir()


def test_cap_file_readiness_follows_the_file_and_its_writer(run_tmp: Path) -> None:
    layout = _layout(run_tmp)
    check = CapFileReady("fs")
    cap = run_tmp / "run" / "fs.cap.json"
    assert not check.is_ready(layout, 1234)
    cap.write_text("{not json")
    assert not check.is_ready(layout, 1234)
    cap.write_text(json.dumps({"service_name": "fs", "pid": 1234}))
    assert check.is_ready(layout, 1234)
    assert check.is_ready(layout, None)
    # A file left behind by a previous process does not count for the one running now.
    assert not check.is_ready(layout, 4321)
    assert str(cap) in check.describe(layout)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_http_readiness_against_a_real_server(run_tmp: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        layout = _layout(run_tmp, server.server_address[1])
        assert HttpReady("/health").is_ready(layout, None)
        assert not HttpReady("/starting").is_ready(layout, None)
        assert HttpReady("/health").url(layout) == f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not HttpReady("/health").is_ready(_layout(run_tmp, closed), None)


def test_wildcard_bind_is_checked_through_loopback(run_tmp: Path) -> None:
    layout = Layout.for_state_dir(run_tmp, gateway_host="0.0.0.0", gateway_port=8123)
    assert HttpReady("/health").url(layout) == "http://127.0.0.1:8123/health"
    assert os.path.isdir(run_tmp / "run")
