"""Changing mcp_servers.yaml: secrets go to 0600 files, the registry's own rules refuse, comments stay, and two
writers at once both get their change in."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llmbasedos.servers.upstream.registry import RegistryError, Secret, load_registry
from llmbasedos.servers.upstream.registry_file import (
    NewServer,
    NoSuchServer,
    ServerExists,
    add_server,
    remove_server,
    secret_file,
)

SECRET = "ghp_registryFileSecret_8c1e"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_add_files_every_value_and_keeps_references(tmp_path: Path) -> None:
    config = tmp_path / "config"
    entry = add_server(config, NewServer("github", command="docker", args=("run", "-i", "github-mcp-server"),
                                         env={"GITHUB_TOKEN": SECRET, "HOME_DIR": Secret(env="HOME")}))
    registry_file = config / "mcp_servers.yaml"
    text = registry_file.read_text()
    assert SECRET not in text and "{file: secrets/github.GITHUB_TOKEN}" in text and "{env: HOME}" in text
    assert mode(registry_file) == 0o600 and mode(config / "secrets") == 0o700
    assert mode(config / "secrets" / "github.GITHUB_TOKEN") == 0o600
    assert entry.env["GITHUB_TOKEN"] == Secret(file=config / "secrets" / "github.GITHUB_TOKEN")
    # what the upstream program will read
    served = load_registry(config, environ={}).servers["github"]
    assert served.resolve({"HOME": "/home/ann"})[0] == {"GITHUB_TOKEN": SECRET, "HOME_DIR": "/home/ann"}
    assert SECRET not in repr(served.describe())

    add_server(config, NewServer("web", url="https://example.org/mcp", headers={"Authorization": "Bearer " + SECRET}))
    web = load_registry(config, environ={}).servers["web"]
    assert web.resolve({})[1] == {"Authorization": "Bearer " + SECRET}
    assert SECRET not in registry_file.read_text()


@pytest.mark.parametrize(("name", "fault"), [
    ("../x", "a name is 1 to 32"), ("fs", "one of the appliance's own services"), ("GitHub", "a name is 1 to 32"),
    ("x" * 40, "a name is 1 to 32"), ("yes", None)])
def test_the_registry_decides_which_names_are_refused(tmp_path: Path, name: str, fault: str | None) -> None:
    config = tmp_path / "config"
    server = NewServer(name, command="node", env={"TOKEN": SECRET})
    if fault is None:  # a name YAML would read as a boolean is written quoted, and works
        add_server(config, server)
        assert list(load_registry(config, environ={}).servers) == [name]
        return
    with pytest.raises(RegistryError, match=fault):
        add_server(config, server)
    # Refused before anything was written: no registry, no secret file (so no path made of the name)
    assert not (config / "mcp_servers.yaml").exists() and not (config / "secrets").exists()
    assert not (tmp_path / "x.TOKEN").exists()


def test_other_faults_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"servers\.web\.url: must be an http"):
        add_server(tmp_path, NewServer("web", url="ftp://example.org/"))
    with pytest.raises(RegistryError, match="larger than 64 KiB"):
        add_server(tmp_path, NewServer("big", command="x", env={"K": "v" * 70_000}))
    assert not (tmp_path / "secrets").exists()


def test_a_name_is_not_taken_twice_unless_replaced(tmp_path: Path) -> None:
    add_server(tmp_path, NewServer("memory", command="node", env={"A": "1", "B": "2"}))
    path = tmp_path / "mcp_servers.yaml"
    # the person tuned the entry by hand: a deny list and timeouts
    path.write_text(path.read_text().replace("  memory:\n", "  memory:\n    tools: {deny: [delete_*]}\n"
                                             "    timeouts: {call: 60}\n"))
    with pytest.raises(ServerExists):
        add_server(tmp_path, NewServer("memory", command="other"))
    entry = add_server(tmp_path, NewServer("memory", command="node", args=("v2.js",), env={"A": "new"}),
                       replace=True)
    assert entry.args == ("v2.js",) and entry.deny == ("delete_*",) and entry.timeouts["call"] == 60.0
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["memory.A"]  # B is no longer used
    assert (tmp_path / "secrets" / "memory.A").read_text() == "new"


def test_remove_takes_the_secrets_with_it(tmp_path: Path) -> None:
    add_server(tmp_path, NewServer("memory", command="node", env={"A": "1"}))
    add_server(tmp_path, NewServer("memory2", command="node", env={"A": "2"}))
    assert remove_server(tmp_path, "memory") == ["memory.A"]
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["memory2.A"]
    assert list(load_registry(tmp_path, environ={}).servers) == ["memory2"]
    with pytest.raises(NoSuchServer):
        remove_server(tmp_path, "memory")


def test_comments_are_kept_when_the_file_is_in_block_style(tmp_path: Path) -> None:
    path = tmp_path / "mcp_servers.yaml"
    path.write_text(textwrap.dedent("""\
        # my servers
        servers:
          # the memory one
          memory:
            command: node   # pinned
            args: [dist/index.js]
          time:
            command: uvx
            args: [mcp-server-time]
        # end
        """))
    add_server(tmp_path, NewServer("web", url="http://127.0.0.1:3001/mcp"))
    remove_server(tmp_path, "time")
    add_server(tmp_path, NewServer("memory", command="node", args=("v2.js",)), replace=True)
    text = path.read_text()
    assert "# my servers" in text and "# the memory one" in text and "# end" in text
    assert "time" not in text and "# pinned" not in text  # the replaced entry's own comment went with it
    assert list(load_registry(tmp_path, environ={}).servers) == ["memory", "web"]


def test_a_file_in_another_style_is_rewritten_and_a_broken_one_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mcp_servers.yaml"
    path.write_text("# flow\nservers: {memory: {command: node}}\n")
    add_server(tmp_path, NewServer("web", url="http://127.0.0.1:3001/mcp"))
    assert yaml.safe_load(path.read_text()) == {"servers": {"memory": {"command": "node"},
                                                            "web": {"url": "http://127.0.0.1:3001/mcp"}}}
    path.write_text("servers:\n  memory: [\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        add_server(tmp_path, NewServer("time", command="uvx"))
    path.write_text("servers: {}\nother: 1\n")
    with pytest.raises(RegistryError, match="one key"):
        remove_server(tmp_path, "memory")
    assert path.read_text() == "servers: {}\nother: 1\n"


def test_odd_keys_never_leave_the_secrets_dir(tmp_path: Path) -> None:
    add_server(tmp_path, NewServer("odd", command="x", env={"../../evil": "v1", "A B": "v2"}))
    files = sorted(p.name for p in (tmp_path / "secrets").iterdir())
    assert len(files) == 2 and all(f.startswith("odd.") and "/" not in f for f in files)
    assert secret_file("odd", "../../evil") != secret_file("odd", "______evil")
    assert load_registry(tmp_path, environ={}).servers["odd"].resolve({})[0] == {"../../evil": "v1", "A B": "v2"}
    assert not (tmp_path.parent / "evil").exists()


def test_the_registry_path_override(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yaml"
    add_server(tmp_path / "config", NewServer("web", url="http://127.0.0.1:1/mcp", headers={"X-Key": SECRET}),
               environ={"LLMBDO_MCP_SERVERS": str(elsewhere)})
    assert "web" in elsewhere.read_text() and not (tmp_path / "config" / "mcp_servers.yaml").exists()
    assert (tmp_path / "config" / "secrets" / "web.X-Key").read_text() == SECRET


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent("""\
        import sys
        from pathlib import Path
        from llmbasedos.servers.upstream.registry_file import NewServer, add_server
        for i in range(5):
            add_server(Path(sys.argv[1]), NewServer(f"s{sys.argv[2]}_{i}", command="node", env={"T": "v"}))
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(n)], env=env) for n in range(6)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 6
    names = set(load_registry(tmp_path, environ={}).servers)
    assert names == {f"s{n}_{i}" for n in range(6) for i in range(5)}
    assert len(list((tmp_path / "secrets").iterdir())) == 30
