"""Rendering of supervisord configurations, read back with supervisor's own parser."""

from __future__ import annotations

import configparser
import io
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervisor.datatypes import RestartWhenExitUnexpected
from supervisor.options import ServerOptions

from llmbasedos.appliance.programs import PROGRAMS, CapFileReady, Program, get_program, shipped_programs
from llmbasedos.appliance.supervisor_config import (
    CONTAINER_USER,
    ConfigError,
    Layout,
    program_env,
    render,
    render_container,
)
from llmbasedos.faults import EXIT_NO_RETRY

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "python -m llmbasedos.appliance.supervisor_config > supervisord.conf"


def _prog(name: str, priority: int = 100, env: dict[str, str] | None = None) -> Program:
    return Program(name=name, module=f"llmbasedos.servers.{name}", description=name, priority=priority,
                   ready=CapFileReady(name), env=env or {})


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Blanks, commas, '=' and non-ASCII are legal in a path and must survive the trip through the file.
    path = Path(tempfile.mkdtemp(prefix="lbd x=y,é;(", dir="/tmp"))
    yield path
    for sub in sorted(path.rglob("*"), reverse=True):
        sub.rmdir()
    path.rmdir()


def _parse(text: str) -> Any:
    """Read a configuration the way supervisord does (its parser checks that directories exist)."""
    options = ServerOptions()
    options.here = "/tmp"
    return options.read_config(io.StringIO(text))


def _sections(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"))
    parser.read_string(text)
    return parser


def test_bare_host_configuration_reads_back_in_supervisor(state_dir: Path) -> None:
    layout = Layout.for_state_dir(state_dir, gateway_port=8123, python="/usr/bin/python3")
    for d in (layout.run_dir, layout.log_dir):
        d.mkdir()
    programs = [_prog("fs"), _prog("sync"), _prog("gateway", priority=300, env={"X_PORT": "{gateway_port}"})]
    section = _parse(render(layout, programs))

    assert section.pidfile == str(state_dir / "run" / "supervisord.pid")
    assert section.logfile == str(state_dir / "logs" / "supervisord.log")
    assert section.logfile_maxbytes == 10 * 1024 * 1024 and section.logfile_backups == 5
    assert section.nodaemon is False
    assert section.directory == str(state_dir)
    (server,) = section.server_configs
    assert server["file"] == str(state_dir / "run" / "supervisor.sock")
    assert server["chmod"] == 0o700

    configs = {pc.name: pc for group in section.process_group_configs for pc in group.process_configs}
    assert set(configs) == {"fs", "sync", "gateway"}
    for name, pc in configs.items():
        assert shlex.split(pc.command) == ["/usr/bin/python3", "-m", f"llmbasedos.servers.{name}"]
        assert pc.environment["LLMBDO_STATE_DIR"] == str(state_dir)
        assert pc.environment["LLMBDO_RUN_DIR"] == str(state_dir / "run")
        assert pc.environment["LLMBDO_DATA_DIR"] == str(state_dir / "data")
        assert pc.environment["LLMBDO_LOG_DIR"] == str(state_dir / "logs")
        assert pc.environment["LLMBDO_CONFIG_DIR"] == str(state_dir / "config")
        assert pc.environment["LLMBDO_VIRTUAL_ROOT"] == str(state_dir / "user_files")
        assert pc.environment["LLMBDO_GATEWAY_PORT"] == "8123"
        assert pc.environment["LLMBDO_SUPERVISOR_SOCKET"] == str(state_dir / "run" / "supervisor.sock")
        assert "LLMBDO_LLM_LOCAL_PORT" not in pc.environment  # no llm-local among these programs
        assert pc.stdout_logfile == str(state_dir / "logs" / f"{name}.log")
        assert pc.redirect_stderr is True
        assert pc.stdout_logfile_maxbytes == 10 * 1024 * 1024 and pc.stdout_logfile_backups == 5
        assert pc.stopasgroup is True and pc.killasgroup is True
        assert pc.stopsignal == 15 and pc.stopwaitsecs >= 10
        assert pc.autostart is True and pc.startretries >= 1 and pc.startsecs >= 1
        # Restarted on any end but the one that says a restart cannot help (faults.EXIT_NO_RETRY).
        assert pc.autorestart is RestartWhenExitUnexpected and pc.exitcodes == [EXIT_NO_RETRY]
        assert pc.uid is None  # the bare host runs programs as the user who ran `llmbasedos up`
    assert configs["gateway"].environment["X_PORT"] == "8123"
    assert configs["fs"].priority < configs["gateway"].priority


def test_llm_local_port_is_given_to_every_program_when_it_runs(state_dir: Path) -> None:
    layout = Layout.for_state_dir(state_dir, llm_local_port=9191)
    programs = [get_program("llm-local"), get_program("gateway")]
    env = program_env(layout, get_program("gateway"), programs)
    assert env["LLMBDO_LLM_LOCAL_PORT"] == "9191"


def test_programs_are_ordered_by_priority_and_names_must_be_unique(state_dir: Path) -> None:
    layout = Layout.for_state_dir(state_dir)
    text = render(layout, [_prog("gateway", 300), _prog("fs", 100), _prog("agent", 200)])
    order = [s.split(":", 1)[1] for s in _sections(text).sections() if s.startswith("program:")]
    assert order == ["fs", "agent", "gateway"]
    with pytest.raises(ConfigError, match="unique"):
        render(layout, [_prog("fs"), _prog("fs")])


@pytest.mark.parametrize(("suffix", "fault"), [
    ("50%", "%"),
    ("a\nb", "line break"),
    ('say "hi"', "quote"),
    ("it's", "quote"),
    ("x ;y", "blank before"),
    ("x #y", "blank before"),
    ("trailing ", "blank"),
])
def test_values_supervisord_would_misread_are_refused(suffix: str, fault: str) -> None:
    layout = Layout.for_state_dir(Path("/tmp/lbd-" + suffix))
    with pytest.raises(ConfigError, match=fault):
        render(layout, [_prog("fs")])


def test_paths_must_be_absolute_and_sockets_short() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        render(Layout.for_state_dir(Path("relative/state")), [_prog("fs")])
    long_dir = Path("/tmp/" + "d" * 100)
    with pytest.raises(ConfigError, match="too long for UNIX sockets"):
        render(Layout.for_state_dir(long_dir), [_prog("fs")])
    with pytest.raises(ConfigError, match="not a TCP port"):
        render(Layout.for_state_dir(Path("/tmp/s"), gateway_port=0), [_prog("fs")])


def test_no_secret_from_the_environment_reaches_the_file(monkeypatch: pytest.MonkeyPatch,
                                                         state_dir: Path) -> None:
    # Secrets reach programs by inheritance from supervisord's environment, never through the readable file.
    monkeypatch.setenv("LLMBDO_OPENAI_API_KEY", "sk-test-secret-value")
    text = render(Layout.for_state_dir(state_dir), list(PROGRAMS))
    assert "sk-test-secret-value" not in text
    assert "API_KEY" not in text


def test_committed_container_configuration_is_the_rendered_one() -> None:
    committed = (REPO / "supervisord.conf").read_text(encoding="utf-8")
    assert committed == render_container(), f"supervisord.conf is stale: regenerate it with `{REGENERATE}`"


def test_container_profile() -> None:
    text = render_container()
    parser = _sections(text)
    assert parser.get("unix_http_server", "chmod") == "0700"
    assert parser.get("unix_http_server", "file") == "/run/mcp/supervisor.sock"
    assert parser.get("supervisord", "nodaemon") == "true"
    assert parser.get("supervisord", "user") == CONTAINER_USER
    assert parser.get("supervisord", "logfile").startswith("/var/log/llmbasedos/")
    programs = [s.split(":", 1)[1] for s in parser.sections() if s.startswith("program:")]
    assert programs == [p.name for p in sorted(shipped_programs(), key=lambda p: (p.priority, p.name))]
    for name in programs:
        section = f"program:{name}"
        assert parser.get(section, "user") == CONTAINER_USER
        assert shlex.split(parser.get(section, "command"))[:2] == ["/opt/venv/bin/python", "-m"]
        env = parser.get(section, "environment")
        assert 'LLMBDO_RUN_DIR="/run/mcp"' in env
        assert 'LLMBDO_CONFIG_DIR="/etc/llmbasedos"' in env
        assert 'LLMBDO_DATA_DIR="/var/lib/llmbasedos/data"' in env
        assert 'LLMBDO_LOG_DIR="/var/log/llmbasedos"' in env
        assert 'LLMBDO_VIRTUAL_ROOT="/data/user_files"' in env
        # The container listens beyond loopback for the published port, which the gateway demands be explicit.
        assert 'LLMBDO_GATEWAY_ALLOW_REMOTE="1"' in env
        assert parser.get(section, "stdout_logfile") == f"/var/log/llmbasedos/{name}.log"


def test_both_profiles_run_the_same_programs_the_same_way(state_dir: Path) -> None:
    shipped = shipped_programs()
    container = _sections(render_container())
    host = _sections(render(Layout.for_state_dir(state_dir), shipped))
    assert [s for s in container.sections() if s.startswith("program:")] == \
        [s for s in host.sections() if s.startswith("program:")]
    for section in (s for s in host.sections() if s.startswith("program:")):
        host_cmd = shlex.split(host.get(section, "command"))
        container_cmd = shlex.split(container.get(section, "command"))
        assert host_cmd[1:] == container_cmd[1:]
        for key in ("priority", "autorestart", "startsecs", "startretries", "stopsignal", "stopwaitsecs",
                    "stopasgroup", "killasgroup", "stdout_logfile_maxbytes", "stdout_logfile_backups"):
            assert host.get(section, key) == container.get(section, key), (section, key)
        host_keys = {kv.split("=", 1)[0] for kv in host.get(section, "environment").split('",')}
        container_keys = {kv.split("=", 1)[0] for kv in container.get(section, "environment").split('",')}
        assert host_keys <= container_keys
