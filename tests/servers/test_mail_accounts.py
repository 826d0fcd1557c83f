"""mail_accounts.yaml: parsing, defaults, and the errors that name the account and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmbasedos.servers.mail.accounts import (
    AccountsError,
    Secret,
    SecretError,
    accounts_path,
    load_accounts,
    parse_accounts,
)

ENV = {"WORK_PW": "w0rk-Secret-x1", "TOKEN": "tok-Secret-y2"}


def _one(**fields: Any) -> dict[str, Any]:
    return {"accounts": {"work": {"host": "imap.example.org", "user": "me@example.org",
                                  "password_env": "WORK_PW", **fields}}}


def _private(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_missing_file_means_no_accounts(tmp_path: Path) -> None:
    assert load_accounts(tmp_path / "none.yaml") == {}
    (tmp_path / "empty.yaml").write_text("")
    assert load_accounts(tmp_path / "empty.yaml") == {}


def test_path_from_env_or_config_dir(tmp_path: Path) -> None:
    assert accounts_path(tmp_path, {}) == tmp_path / "mail_accounts.yaml"
    assert accounts_path(tmp_path, {"LLMBDO_MAIL_ACCOUNTS": "/x/y.yaml"}) == Path("/x/y.yaml")


def test_defaults() -> None:
    acc = parse_accounts(_one(), env=ENV)["work"]
    assert (acc.imap.port, acc.imap.security, acc.imap.auth) == (993, "tls", "password")
    assert acc.address == "me@example.org" and acc.smtp is None
    assert acc.imap.password == Secret("env", "WORK_PW")
    starttls = parse_accounts(_one(security="starttls"), env=ENV)["work"]
    assert starttls.imap.port == 143
    assert acc.describe()["can_send"] is False


def test_top_level_ids_as_in_older_files() -> None:
    data = {"personal": {"host": "localhost", "user": "bob", "security": "none", "password_env": "WORK_PW"}}
    acc = parse_accounts(data, env=ENV)["personal"]
    assert acc.imap.port == 143 and acc.address is None


def test_smtp_inherits_user_and_secret() -> None:
    acc = parse_accounts(_one(smtp={"host": "smtp.example.org", "security": "starttls"}), env=ENV)["work"]
    assert acc.smtp is not None
    assert (acc.smtp.port, acc.smtp.user, acc.smtp.password) == (587, "me@example.org", acc.imap.password)
    assert acc.describe()["can_send"] is True
    relay = parse_accounts(_one(smtp={"host": "127.0.0.1", "security": "none", "auth": False}), env=ENV)["work"]
    assert relay.smtp is not None and relay.smtp.auth == "none" and relay.smtp.port == 25


def test_oauth2_token(tmp_path: Path) -> None:
    data = _one()
    del data["accounts"]["work"]["password_env"]
    data["accounts"]["work"]["oauth2_token_file"] = str(_private(tmp_path, "tok-Secret-y2\n"))
    acc = parse_accounts(data, env=ENV)["work"]
    assert acc.imap.auth == "oauth2" and acc.imap.oauth2_token is not None
    assert acc.imap.oauth2_token.read() == "tok-Secret-y2"


@pytest.mark.parametrize(("fields", "message"), [
    ({"password": "inline"}, "account 'work': password: passwords are not accepted"),
    ({"pasword_env": "X"}, r"account 'work': unknown setting\(s\) pasword_env"),
    ({"security": "ssl"}, "account 'work': security: must be one of tls, starttls, none"),
    ({"security": "none"}, "account 'work': security: 'none' .* loopback host"),
    ({"port": 0}, "account 'work': port: must be an integer"),
    ({"port": "993"}, "account 'work': port: must be an integer"),
    ({"password_env": "NOT_SET_ANYWHERE"}, "account 'work': password_env: environment variable NOT_SET_ANYWHERE"),
    ({"oauth2_token_env": "TOKEN"}, "account 'work': set only one of password_env, oauth2_token_env"),
    ({"timeout": -1}, "account 'work': timeout: must be a number of seconds"),
    ({"host": ""}, "account 'work': host: is required"),
    ({"address": "not-an-address"}, "account 'work': address"),
    ({"smtp": {"host": "smtp.example.org", "security": "none"}}, "account 'work': smtp: security: 'none'"),
    ({"smtp": {"host": "smtp.example.org", "password": "x"}}, "account 'work': smtp: password: passwords are"),
    ({"ca_file": "/nonexistent/ca.pem"}, "account 'work': ca_file"),
])
def test_errors_name_account_and_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(AccountsError, match=message) as info:
        parse_accounts(_one(**fields), env=ENV)
    assert ENV["WORK_PW"] not in str(info.value)


def test_no_credentials() -> None:
    data = _one()
    del data["accounts"]["work"]["password_env"]
    with pytest.raises(AccountsError, match="account 'work': no credentials"):
        parse_accounts(data, env=ENV)


def test_bad_ids_and_shapes() -> None:
    with pytest.raises(AccountsError, match="account id 'bad id!'"):
        parse_accounts({"bad id!": {}}, env=ENV)
    with pytest.raises(AccountsError, match="must be a mapping"):
        parse_accounts(["a"], env=ENV)
    with pytest.raises(AccountsError, match="account 'work': must be a mapping"):
        parse_accounts({"work": "imap.example.org"}, env=ENV)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_password_file_must_be_private(tmp_path: Path, mode: int) -> None:
    data = _one()
    del data["accounts"]["work"]["password_env"]
    data["accounts"]["work"]["password_file"] = str(_private(tmp_path, "file-Secret-z3", mode))
    with pytest.raises(AccountsError, match=f"password_file: .*mode {mode:04o}.*chmod 600") as info:
        parse_accounts(data, env=ENV)
    assert "file-Secret-z3" not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_password_file_accepted(tmp_path: Path, mode: int) -> None:
    data = _one()
    del data["accounts"]["work"]["password_env"]
    data["accounts"]["work"]["password_file"] = str(_private(tmp_path, "file-Secret-z3\n", mode))
    acc = parse_accounts(data, env=ENV)["work"]
    assert acc.imap.password is not None and acc.imap.password.read() == "file-Secret-z3"


def test_password_file_missing(tmp_path: Path) -> None:
    data = _one()
    del data["accounts"]["work"]["password_env"]
    data["accounts"]["work"]["password_file"] = str(tmp_path / "absent")
    with pytest.raises(AccountsError, match=r"password_file: .*cannot be read"):
        parse_accounts(data, env=ENV)


def test_secret_read_later_fails_without_saying_where(tmp_path: Path) -> None:
    path = _private(tmp_path, "file-Secret-z3")
    secret = Secret("file", str(path))
    assert "file-Secret-z3" not in repr(secret) and str(path) not in repr(secret)
    path.chmod(0o644)  # loosened after start: refused at the next connection
    with pytest.raises(SecretError) as info:
        secret.read()
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(SecretError, match="NOT_SET_ANYWHERE"):
        Secret("env", "NOT_SET_ANYWHERE").read()


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mail_accounts.yaml"
    path.write_text("accounts:\n  work:\n    host: [unclosed\n    user: me\n")
    with pytest.raises(AccountsError, match=r"mail_accounts.yaml: not valid YAML at line \d+"):
        load_accounts(path)


def test_describe_never_shows_secrets(tmp_path: Path) -> None:
    acc = parse_accounts(_one(smtp={"host": "smtp.example.org"}), env=ENV)["work"]
    described = repr(acc.describe()) + repr(acc)
    assert ENV["WORK_PW"] not in described and "WORK_PW" not in repr(acc.describe())
