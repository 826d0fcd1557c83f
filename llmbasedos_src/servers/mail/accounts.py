"""Mail accounts from `mail_accounts.yaml`, checked once at start.

    accounts:                      # or the account ids at the top level, as older files have them
      work:
        host: imap.example.org
        port: 993                  # default: 993 for tls, 143 otherwise
        user: me@example.org
        security: tls              # tls | starttls | none (none only for a loopback host)
        password_env: WORK_MAIL_PASSWORD      # or password_file (mode 0600 or stricter),
                                              # or oauth2_token_env / oauth2_token_file (XOAUTH2)
        address: me@example.org    # the From of sent mail; default: user when it is an address
        ca_file: /etc/ssl/my-ca.pem           # optional extra trust for a private server
        timeout: 30                # seconds per IMAP command; connect_timeout: 10
        smtp:                      # optional; needed by mcp.mail.send
          host: smtp.example.org
          port: 465                # default: 465 for tls, 587 for starttls, 25 for none
          security: tls
          # user and secret default to the IMAP ones; `auth: false` for a relay without login

Secrets are never kept in the parsed config: a `Secret` only says where the value lives and reads it on
demand, so a token file that is rotated on disk is picked up at the next connection.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmbasedos.loopback import is_loopback
from llmbasedos.yaml_text import load_yaml

__all__ = ["Account", "AccountsError", "Endpoint", "Secret", "SecretError", "accounts_path", "load_accounts",
           "parse_accounts"]

Security = Literal["tls", "starttls", "none"]
_SECURITIES = ("tls", "starttls", "none")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_KEYS = ("password_env", "password_file", "oauth2_token_env", "oauth2_token_file")
_COMMON_KEYS = {"host", "port", "user", "security", "ca_file", "timeout", "connect_timeout", *_SECRET_KEYS}
_ACCOUNT_KEYS = _COMMON_KEYS | {"address", "display_name", "smtp"}
_SMTP_KEYS = _COMMON_KEYS | {"auth"}
_IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}
_SMTP_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_MAX_SECRET = 64 * 1024


class AccountsError(ValueError):
    """The accounts file is wrong; the message names the account and the field."""


class SecretError(Exception):
    """A secret cannot be read at connection time. The message names no value and no path."""


@dataclass(frozen=True)
class Secret:
    """Where a secret lives (an environment variable or a file); the value is read on demand."""

    kind: Literal["env", "file"]
    source: str

    def __repr__(self) -> str:
        return f"Secret({self.kind})"

    def read(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.source, "")
            if not value:
                raise SecretError(f"environment variable {self.source} is not set or empty")
            return value
        try:
            _check_private_file(Path(self.source))
            with open(self.source, encoding="utf-8") as fh:
                value = fh.read(_MAX_SECRET).strip()
        except (OSError, UnicodeDecodeError, AccountsError) as exc:
            raise SecretError("the secret file cannot be read") from exc
        if not value:
            raise SecretError("the secret file is empty")
        return value


@dataclass(frozen=True)
class Endpoint:
    """One server an account talks to (its IMAP server, or its SMTP server)."""

    host: str
    port: int
    security: Security
    user: str
    password: Secret | None
    oauth2_token: Secret | None
    ca_file: str | None
    timeout: float
    connect_timeout: float

    @property
    def auth(self) -> Literal["password", "oauth2", "none"]:
        if self.oauth2_token is not None:
            return "oauth2"
        return "password" if self.password is not None else "none"


@dataclass(frozen=True)
class Account:
    id: str
    imap: Endpoint
    smtp: Endpoint | None
    address: str | None
    display_name: str | None

    def describe(self) -> dict[str, Any]:
        """What a client may see of the account: never a secret, never where it is stored."""
        return {
            "id": self.id,
            "host": self.imap.host,
            "port": self.imap.port,
            "user": self.imap.user,
            "security": self.imap.security,
            "auth": self.imap.auth,
            "address": self.address,
            "can_send": self.smtp is not None and self.address is not None,
        }


def accounts_path(config_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    value = env.get("LLMBDO_MAIL_ACCOUNTS")
    return Path(value) if value else config_dir / "mail_accounts.yaml"


def load_accounts(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Account]:
    """Read and check the accounts file. A missing file means no accounts."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountsError(f"{path.name}: cannot be read: {exc.__class__.__name__}") from None
    data = load_yaml(text, path.name, AccountsError)
    return parse_accounts(data, path.name, env)


def parse_accounts(data: Any, source: str = "mail_accounts.yaml",
                   env: Mapping[str, str] | None = None) -> dict[str, Account]:
    env = os.environ if env is None else env
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AccountsError(f"{source}: must be a mapping of account ids to settings")
    if set(data) == {"accounts"}:
        data = data["accounts"] or {}
        if not isinstance(data, dict):
            raise AccountsError(f"{source}: 'accounts' must be a mapping of account ids to settings")
    accounts: dict[str, Account] = {}
    for acc_id, raw in data.items():
        if not isinstance(acc_id, str) or not _ID_RE.match(acc_id):
            raise AccountsError(f"{source}: account id {acc_id!r} must be letters, digits, '_', '.', '-' "
                                "(at most 64)")
        accounts[acc_id] = _parse_account(acc_id, raw, source, env)
    return accounts


def _parse_account(acc_id: str, raw: Any, source: str, env: Mapping[str, str]) -> Account:
    where = f"{source}: account '{acc_id}'"
    if not isinstance(raw, dict):
        raise AccountsError(f"{where}: must be a mapping of settings")
    _check_keys(raw, _ACCOUNT_KEYS, where)
    imap = _parse_endpoint(raw, where, env, _IMAP_PORTS, None)
    address = _opt_str(raw, "address", where)
    if address is None and "@" in imap.user:
        address = imap.user
    if address is not None and ("@" not in address or _has_control(address)):
        raise AccountsError(f"{where}: address: {address!r} is not an e-mail address")
    smtp = None
    if raw.get("smtp") is not None:
        smtp_raw = raw["smtp"]
        if not isinstance(smtp_raw, dict):
            raise AccountsError(f"{where}: smtp: must be a mapping of settings")
        _check_keys(smtp_raw, _SMTP_KEYS, f"{where}: smtp")
        smtp = _parse_endpoint(smtp_raw, f"{where}: smtp", env, _SMTP_PORTS, imap)
    return Account(acc_id, imap, smtp, address, _opt_str(raw, "display_name", where))


def _parse_endpoint(raw: dict[str, Any], where: str, env: Mapping[str, str], ports: dict[str, int],
                    inherit: Endpoint | None) -> Endpoint:
    host = _req_str(raw, "host", where)
    if _has_control(host) or " " in host:
        raise AccountsError(f"{where}: host: {host!r} is not a host name")
    security = raw.get("security", "tls")
    if security not in _SECURITIES:
        raise AccountsError(f"{where}: security: must be one of tls, starttls, none (got {security!r})")
    if security == "none" and not is_loopback(host):
        raise AccountsError(f"{where}: security: 'none' sends the password in clear and is allowed only for a "
                            f"loopback host, not {host!r}; use tls or starttls")
    port = raw.get("port", ports[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise AccountsError(f"{where}: port: must be an integer between 1 and 65535 (got {port!r})")
    user = _opt_str(raw, "user", where)
    if user is None:
        if inherit is None:
            raise AccountsError(f"{where}: user: is required")
        user = inherit.user
    password, token = _parse_secrets(raw, where, env)
    auth = raw.get("auth", True)
    if not isinstance(auth, bool):
        raise AccountsError(f"{where}: auth: must be true or false")
    if password is None and token is None and auth:
        if inherit is None:
            raise AccountsError(f"{where}: no credentials: set one of {', '.join(_SECRET_KEYS)}")
        password, token = inherit.password, inherit.oauth2_token
    if not auth:
        password = token = None
    ca_file = _opt_str(raw, "ca_file", where)
    if ca_file is None and inherit is not None:
        ca_file = inherit.ca_file
    if ca_file is not None and not Path(ca_file).is_file():
        raise AccountsError(f"{where}: ca_file: {ca_file} is not a readable file")
    default_timeout = inherit.timeout if inherit else 30.0
    default_connect = inherit.connect_timeout if inherit else 10.0
    return Endpoint(host, port, security, user, password, token, ca_file,
                    _seconds(raw, "timeout", where, default_timeout),
                    _seconds(raw, "connect_timeout", where, default_connect))


def _parse_secrets(raw: dict[str, Any], where: str, env: Mapping[str, str]) -> tuple[Secret | None, Secret | None]:
    given = [k for k in _SECRET_KEYS if raw.get(k) is not None]
    if len(given) > 1:
        raise AccountsError(f"{where}: set only one of {', '.join(given)}")
    if not given:
        return None, None
    key = given[0]
    value = _req_str(raw, key, where)
    if key.endswith("_env"):
        if not env.get(value):
            raise AccountsError(f"{where}: {key}: environment variable {value} is not set or empty")
        secret = Secret("env", value)
    else:
        try:
            _check_private_file(Path(value))
        except AccountsError as exc:
            raise AccountsError(f"{where}: {key}: {exc}") from None
        except OSError as exc:
            raise AccountsError(f"{where}: {key}: {value} cannot be read: {exc.strerror}") from None
        secret = Secret("file", value)
    return (None, secret) if key.startswith("oauth2") else (secret, None)


def _check_private_file(path: Path) -> None:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise AccountsError(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise AccountsError(f"{path} is accessible to other users (mode {mode:04o}); "
                            f"refusing it: run chmod 600 on it")


def _check_keys(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    if "password" in raw:
        raise AccountsError(f"{where}: password: passwords are not accepted in this file; "
                            "use password_env (an environment variable) or password_file (a 0600 file)")
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise AccountsError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(allowed))}")


def _req_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AccountsError(f"{where}: {key}: is required and must be a non-empty string")
    return value.strip()


def _opt_str(raw: dict[str, Any], key: str, where: str) -> str | None:
    if raw.get(key) is None:
        return None
    return _req_str(raw, key, where)


def _seconds(raw: dict[str, Any], key: str, where: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
        raise AccountsError(f"{where}: {key}: must be a number of seconds between 0 and 3600 (got {value!r})")
    return float(value)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
