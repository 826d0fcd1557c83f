"""mcp.mail.send through the real mail server process to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from llmbasedos.protocol import errors
from llmbasedos.rpc.client import RPCClient
from tests.support.dovecot import PDF_BYTES, free_port, self_signed_cert
from tests.support.procs import ServerHandle, start_server

SMTP_PW = "smtp-Pw-4e7a1c09"
BAD_PW = "bad-Pw-88c2f0d1"
TOKEN = "ya29.token-Secret-77e1"


class _Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.oauth_logins: list[str] = []

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        # RFC-less but widespread: base64("user=U\x01auth=Bearer T\x01\x01") as the initial response.
        fields = dict(f.split("=", 1) for f in base64.b64decode(args[-1]).decode().split("\x01") if f)
        ok = fields.get("auth") == f"Bearer {TOKEN}"
        if ok:
            self.oauth_logins.append(fields["user"])
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        out = []
        for env in self.envelopes:
            data = env.original_content or env.content
            assert isinstance(data, bytes)
            msg = BytesParser(policy=policy.default).parsebytes(data)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out


class _Controller(Controller):
    """aiosmtpd's Controller on port 0: learns the port the kernel chose before it checks the server."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"sender" and data.password == SMTP_PW.encode()
    return AuthResult(success=ok, handled=False)


@dataclass
class World:
    inbox: _Inbox
    tls_inbox: _Inbox
    server: ServerHandle
    conf: Path


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    conf = Path(tempfile.mkdtemp(prefix="lbmx", dir="/tmp"))
    cert, key = self_signed_cert(conf)
    inbox, tls_inbox = _Inbox(), _Inbox()
    plain = _Controller(inbox, hostname="127.0.0.1", port=0, authenticator=_authenticator,
                        auth_require_tls=False)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    starttls = _Controller(tls_inbox, hostname="127.0.0.1", port=0, tls_context=server_ctx, require_starttls=True,
                           authenticator=_authenticator)
    plain.start()
    starttls.start()
    imap = {"host": "127.0.0.1", "port": free_port(), "security": "none"}  # sending needs no IMAP
    accounts = {
        "sender": {**imap, "user": "sender", "password_env": "T_SMTP_PW", "address": "sender@example.org",
                   "display_name": "Sender Name",
                   "smtp": {"host": "127.0.0.1", "port": plain.port, "security": "none"}},
        "relay": {**imap, "user": "relay@example.org", "password_env": "T_BAD_PW",
                  "smtp": {"host": "127.0.0.1", "port": plain.port, "security": "none", "auth": False}},
        "badpw": {**imap, "user": "sender", "password_env": "T_BAD_PW", "address": "sender@example.org",
                  "smtp": {"host": "127.0.0.1", "port": plain.port, "security": "none"}},
        "secure": {**imap, "user": "sender", "password_env": "T_SMTP_PW", "address": "sender@example.org",
                   "smtp": {"host": "127.0.0.1", "port": starttls.port, "security": "starttls",
                            "ca_file": str(cert)}},
        "untrusted": {**imap, "user": "sender", "password_env": "T_SMTP_PW", "address": "sender@example.org",
                      "smtp": {"host": "127.0.0.1", "port": starttls.port, "security": "starttls"}},
        "oauth": {**imap, "user": "oauth@example.org", "oauth2_token_env": "T_TOKEN",
                  "smtp": {"host": "127.0.0.1", "port": plain.port, "security": "none"}},
        "nosmtp": {**imap, "user": "x@example.org", "password_env": "T_SMTP_PW"},
        "down": {**imap, "user": "x@example.org", "password_env": "T_SMTP_PW",
                 "smtp": {"host": "127.0.0.1", "port": free_port(), "security": "none"}},
    }
    path = conf / "mail_accounts.yaml"
    path.write_text(yaml.safe_dump({"accounts": accounts}))
    server = start_server("mail", {"LLMBDO_MAIL_ACCOUNTS": str(path), "T_SMTP_PW": SMTP_PW, "T_BAD_PW": BAD_PW,
                                   "T_TOKEN": TOKEN,
                                   "LLMBDO_MAIL_MAX_SEND": "100000", "LLMBDO_LOG_LEVEL": "DEBUG",
                                   "LLMBDO_DEBUG": "1"})
    try:
        yield World(inbox, tls_inbox, server, conf)
    finally:
        server.stop()
        plain.stop()
        starttls.stop()
        for p in conf.iterdir():
            p.unlink()
        conf.rmdir()


@pytest.fixture
async def client(world: World) -> AsyncIterator[RPCClient]:
    c = await RPCClient.connect_unix(str(world.server.socket))
    yield c
    await c.close()


async def test_send_with_html_attachment_and_bcc(client: RPCClient, world: World) -> None:
    before = len(world.inbox.envelopes)
    res = await client.call("mcp.mail.send", {
        "account": "sender", "to": ["Bob Stone <bob@example.org>"], "cc": ["carol@example.org"],
        "bcc": ["hidden@example.org"], "subject": "Rapport — été 2025", "text": "Bonjour,\nci-joint.\n",
        "html": "<p>Bonjour, <b>ci-joint</b>.</p>",
        "attachments": [{"filename": "rapport.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(PDF_BYTES).decode()}],
    }, timeout=60)
    assert res["accepted"] == ["bob@example.org", "carol@example.org", "hidden@example.org"]
    assert res["refused"] == {} and res["message_id"].endswith("@example.org>")
    env = world.inbox.envelopes[before]
    assert env.mail_from == "sender@example.org"
    assert env.rcpt_tos == ["bob@example.org", "carol@example.org", "hidden@example.org"]
    msg = world.inbox.messages()[before]
    assert msg["Subject"] == "Rapport — été 2025"
    assert msg["From"] == "Sender Name <sender@example.org>"
    assert msg["Bcc"] is None and "hidden@example.org" not in str(msg)
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and plain.get_content().replace("\r\n", "\n") == "Bonjour,\nci-joint.\n"
    assert html is not None and "<b>ci-joint</b>" in html.get_content()
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "rapport.pdf" and att.get_content() == PDF_BYTES


async def test_relay_without_login(client: RPCClient, world: World) -> None:
    res = await client.call("mcp.mail.send", {"account": "relay", "to": ["bob@example.org"], "subject": "hi",
                                              "text": "x"}, timeout=60)
    assert res["accepted"] == ["bob@example.org"]
    assert world.inbox.envelopes[-1].mail_from == "relay@example.org"


async def test_xoauth2_login(client: RPCClient, world: World) -> None:
    await client.call("mcp.mail.send", {"account": "oauth", "to": ["bob@example.org"], "subject": "token",
                                        "text": "x"}, timeout=60)
    assert world.inbox.oauth_logins == ["oauth@example.org"]
    assert world.inbox.messages()[-1]["Subject"] == "token"


async def test_starttls_with_trusted_certificate(client: RPCClient, world: World) -> None:
    await client.call("mcp.mail.send", {"account": "secure", "to": ["bob@example.org"], "subject": "over TLS",
                                        "text": "x"}, timeout=60)
    assert world.tls_inbox.messages()[-1]["Subject"] == "over TLS"
    with pytest.raises(errors.UpstreamError, match="not trusted"):
        await client.call("mcp.mail.send", {"account": "untrusted", "to": ["bob@example.org"], "subject": "no",
                                            "text": "x"}, timeout=60)


async def test_size_cap(client: RPCClient, world: World) -> None:
    before = len(world.inbox.envelopes)
    big = base64.b64encode(b"\x00" * 200_000).decode()
    with pytest.raises(errors.PayloadTooLarge, match="limit is 100000"):
        await client.call("mcp.mail.send", {"account": "sender", "to": ["bob@example.org"], "subject": "big",
                                            "text": "x", "attachments": [{"filename": "big.bin",
                                                                          "content_base64": big}]}, timeout=60)
    assert len(world.inbox.envelopes) == before


async def test_bad_input_is_refused_before_sending(client: RPCClient, world: World) -> None:
    before = len(world.inbox.envelopes)
    cases: list[tuple[dict[str, Any], type[errors.RPCError], str]] = [
        ({"subject": "x\r\nBcc: victim@example.org", "text": "x", "to": ["a@example.org"]}, errors.InvalidParams,
         "params.subject"),
        ({"subject": "x", "text": "x", "to": ["not an address"]}, errors.InvalidParams, r"params.to\[0\]"),
        ({"subject": "x", "text": "x", "to": ["a@example.org\r\nRCPT TO:<b@example.org>"]}, errors.InvalidParams,
         "control characters"),
        ({"subject": "x", "to": ["a@example.org"]}, errors.InvalidParams, "give text, html or both"),
        ({"subject": "x", "text": "x", "to": []}, errors.InvalidParams, "at least one recipient"),
        ({"subject": "x", "text": "x", "to": ["a@example.org"],
          "attachments": [{"filename": "a", "content_base64": "***"}]}, errors.InvalidParams, "not valid base64"),
    ]
    for params, exc, message in cases:
        with pytest.raises(exc, match=message):
            await client.call("mcp.mail.send", {"account": "sender", **params}, timeout=60)
    assert len(world.inbox.envelopes) == before


async def test_accounts_that_cannot_send(client: RPCClient) -> None:
    msg = {"to": ["bob@example.org"], "subject": "x", "text": "x"}
    with pytest.raises(errors.FeatureUnavailable, match="account 'nosmtp' has no smtp section"):
        await client.call("mcp.mail.send", {"account": "nosmtp", **msg}, timeout=60)
    with pytest.raises(errors.NotFound, match="unknown mail account 'ghost'"):
        await client.call("mcp.mail.send", {"account": "ghost", **msg}, timeout=60)
    with pytest.raises(errors.ServiceUnavailable, match="SMTP server of account 'down' is unreachable"):
        await client.call("mcp.mail.send", {"account": "down", **msg}, timeout=60)


async def test_wrong_smtp_password_and_no_secret_in_log(client: RPCClient, world: World) -> None:
    await client.call("mcp.mail.send", {"account": "sender", "to": ["bob@example.org"], "subject": "ok",
                                        "text": "x"}, timeout=60)
    with pytest.raises(errors.UpstreamError, match="SMTP authentication failed for account 'badpw'") as info:
        await client.call("mcp.mail.send", {"account": "badpw", "to": ["bob@example.org"], "subject": "x",
                                            "text": "x"}, timeout=60)
    assert info.value.data["reason"] == "authentication_failed"
    text = str(info.value.to_error())
    assert BAD_PW not in text and SMTP_PW not in text
    log = world.server.output()
    assert "sent a message from account sender" in log
    assert BAD_PW not in log and SMTP_PW not in log and TOKEN not in log
