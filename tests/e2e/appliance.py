"""A whole appliance for end-to-end tests: `llmbasedos up` on a fresh state dir, configured like a user would.

    app = Appliance.start(dovecot)      # config files written, then `llmbasedos up --port 0`
    app.status()                        # `llmbasedos status --json`
    app.token, app.ws_url, app.mcp_url
    app.down(); app.leftovers()         # processes still mentioning the state dir after `down`
    app.cleanup()

Nothing here opens the tiers: the appliance runs with no licence, so the FREE tier a fresh install gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.dovecot import Dovecot
from tests.support.webdav import WebDav

__all__ = ["Appliance", "MAIL_PASSWORD_ENV", "SEEDED", "WORKFLOW_ID"]

MAIL_PASSWORD_ENV = "E2E_ALICE_PASSWORD"
# Files in the user files before `up`, as a user's own documents would be (virtual path -> text).
SEEDED = {"/welcome.txt": "Welcome to llmbasedos: your files, mail and models behind one door.\n"}
WORKFLOW_ID = "e2e_note"

# A workflow that calls a gateway method (the agent acts through the gateway, as the caller).
_WORKFLOW = {
    "id": WORKFLOW_ID,
    "name": "Write a note",
    "description": "Writes the given text to a file through the fs service.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
        "required": ["path", "text"],
        "additionalProperties": False,
    },
    "steps": [
        {"id": "write", "call": "mcp.fs.write",
         "params": {"path": "{{ inputs.path }}", "content": "{{ inputs.text }}"}},
        {"id": "check", "call": "mcp.fs.stat", "params": {"path": "{{ inputs.path }}"}},
    ],
    "outputs": {"size": "{{ steps.check.size }}"},
}


def _cli() -> list[str]:
    return [sys.executable, "-m", "llmbasedos.appliance.cli"]


def _clean_env() -> dict[str, str]:
    # The appliance must find everything from its state dir, not from the test runner's environment.
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMBDO_")}


class Appliance:
    def __init__(self, state: Path, remote: Path, env: dict[str, str]) -> None:
        self.state = state
        self.remote = remote
        self.env = env
        self.user_files = state / "user_files"
        self.status_data: dict[str, Any] = {}
        self.dav: WebDav | None = None

    @classmethod
    def start(cls, dovecot: Dovecot, mail_user: str, mail_password: str) -> Appliance:
        state = Path(tempfile.mkdtemp(prefix="e2", dir="/tmp"))
        remote = Path(tempfile.mkdtemp(prefix="e2r", dir="/tmp")) / "served"
        remote.mkdir()
        app = cls(state, remote, {**_clean_env(), MAIL_PASSWORD_ENV: mail_password})
        try:
            app.dav = WebDav(remote)
            app._write_config(dovecot, mail_user)
            app.run("up", "--state-dir", str(state), "--port", "0", timeout=600)
            app.status_data = app.status()
        except BaseException:
            app.cleanup()
            raise
        return app

    def _write_config(self, dovecot: Dovecot, mail_user: str) -> None:
        config = self.state / "config"
        (config / "workflows").mkdir(parents=True)
        accounts = {"accounts": {"inbox": dovecot.account(mail_user, password_env=MAIL_PASSWORD_ENV)}}
        (config / "mail_accounts.yaml").write_text(yaml.safe_dump(accounts), encoding="utf-8")
        # A remote off the local disk as the sync server sees it (a local folder would be refused): a real
        # WebDAV server, rclone's own, serving a folder outside the virtual root; `backup` is an alias of it.
        assert self.dav is not None
        (config / "rclone.conf").write_text(f"[dav]\ntype = webdav\nurl = {self.dav.url}\nvendor = rclone\n\n"
                                            "[backup]\ntype = alias\nremote = dav:\n", encoding="utf-8")
        for vpath, text in SEEDED.items():
            (self.user_files / vpath.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (self.user_files / vpath.lstrip("/")).write_text(text, encoding="utf-8")
        (config / "workflows" / f"{WORKFLOW_ID}.yaml").write_text(yaml.safe_dump(_WORKFLOW, sort_keys=False),
                                                                  encoding="utf-8")

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*_cli(), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                             check=False, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise RuntimeError(f"llmbasedos {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}\n"
                               f"{self.logs()}")
        return res

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("status", "--state-dir", str(self.state), "--json").stdout)
        return data

    def logs(self) -> str:
        out = []
        for log in sorted((self.state / "logs").glob("*.log")):
            with contextlib.suppress(OSError):
                out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)

    @property
    def token(self) -> str:
        return self.run("token", "owner", "--state-dir", str(self.state)).stdout.strip()

    @property
    def url(self) -> str:
        return str(self.status_data["gateway_url"])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    @property
    def mcp_url(self) -> str:
        return self.url + "/mcp"

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", "--state-dir", str(self.state), timeout=180)

    def leftovers(self) -> list[str]:
        """Processes whose command line or environment mention the state dir (ours excluded)."""
        needle = str(self.state).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if needle in cmdline or needle in environ:
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {shown}")
        return found

    def cleanup(self) -> None:
        self.run("down", "--state-dir", str(self.state), timeout=180, check=False)
        shutil.rmtree(self.state, ignore_errors=True)
        if self.dav is not None:
            self.dav.stop()
        shutil.rmtree(self.remote.parent, ignore_errors=True)
