"""Compose a message from call params and send it with smtplib, over TLS or STARTTLS (clear only on loopback).

smtplib's exceptions become JSON-RPC errors here, and nothing the server says about a login is passed on.
"""

from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from llmbasedos.protocol import errors
from llmbasedos.servers.mail.accounts import Account, Endpoint, SecretError
from llmbasedos.servers.mail.messages import decode_base64
from llmbasedos.servers.mail.pool import tls_context, upstream_message

__all__ = ["compose", "send"]


def _no_control(value: str, where: str) -> str:
    # A CR or LF in a header value would let the caller write headers of their own.
    if any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
        raise errors.InvalidParams(f"{where}: control characters are not allowed")
    return value


def _addresses(values: list[str], where: str) -> list[str]:
    out = []
    for i, value in enumerate(values):
        _no_control(value, f"{where}[{i}]")
        parsed = getaddresses([value])
        if len(parsed) != 1 or "@" not in parsed[0][1] or " " in parsed[0][1]:
            raise errors.InvalidParams(f"{where}[{i}]: {value!r} is not one e-mail address")
        out.append(value)
    return out


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _bare(value: str) -> str:
    return getaddresses([value])[0][1]


def compose(account: Account, params: dict[str, Any]) -> tuple[EmailMessage, list[str]]:
    """Build the message and its envelope recipients (Bcc stays out of the headers)."""
    if account.address is None:
        raise errors.FeatureUnavailable(f"account '{account.id}' has no address to send from; set 'address'")
    to = _addresses(params.get("to", []), "params.to")
    cc = _addresses(params.get("cc", []), "params.cc")
    bcc = _addresses(params.get("bcc", []), "params.bcc")
    if not to and not cc and not bcc:
        raise errors.InvalidParams("params.to: at least one recipient is needed")
    msg = EmailMessage()
    local, _, domain = account.address.rpartition("@")
    msg["From"] = Address(display_name=account.display_name or "", username=local, domain=domain)
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = _no_control(params.get("subject", ""), "params.subject")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=domain)
    for key, header in (("in_reply_to", "In-Reply-To"), ("references", "References")):
        if params.get(key):
            msg[header] = _no_control(params[key], f"params.{key}")
    if params.get("reply_to"):
        msg["Reply-To"] = ", ".join(_addresses(params["reply_to"], "params.reply_to"))
    text = params.get("text")
    html = params.get("html")
    if text is None and html is None:
        raise errors.InvalidParams("params: give text, html or both")
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    else:
        msg.set_content(html, subtype="html")
    for i, att in enumerate(params.get("attachments", [])):
        where = f"params.attachments[{i}]"
        data = decode_base64(att["content_base64"], f"{where}.content_base64")
        ctype = att.get("content_type") or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        if not maintype or not subtype or any(c in ctype for c in " ;\r\n"):
            raise errors.InvalidParams(f"{where}.content_type: {ctype!r} is not a type/subtype")
        filename = _no_control(att["filename"], f"{where}.filename")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg, [_bare(a) for a in (*to, *cc, *bcc)]


def _connect(ep: Endpoint) -> smtplib.SMTP:
    if ep.security == "tls":
        return smtplib.SMTP_SSL(ep.host, ep.port, timeout=ep.timeout, context=tls_context(ep))
    smtp = smtplib.SMTP(ep.host, ep.port, timeout=ep.timeout)
    if ep.security == "starttls":
        try:
            smtp.starttls(context=tls_context(ep))
        except BaseException:
            smtp.close()
            raise
    return smtp


def _login(smtp: smtplib.SMTP, ep: Endpoint) -> None:
    if ep.oauth2_token is not None:
        token = ep.oauth2_token.read()
        smtp.ehlo_or_helo_if_needed()
        smtp.auth("XOAUTH2", lambda challenge=None: f"user={ep.user}\x01auth=Bearer {token}\x01\x01",
                  initial_response_ok=True)
    elif ep.password is not None:
        smtp.login(ep.user, ep.password.read())


def send(account: Account, msg: EmailMessage, recipients: list[str], *, max_size: int) -> dict[str, Any]:
    """Send over the account's SMTP server; blocking (run it in a thread)."""
    ep = account.smtp
    acc = account.id
    if ep is None:
        raise errors.FeatureUnavailable(f"account '{acc}' has no smtp section; it cannot send")
    data = msg.as_bytes()
    if len(data) > max_size:
        raise errors.PayloadTooLarge(f"the message is {len(data)} bytes; the limit is {max_size} "
                                     "(LLMBDO_MAIL_MAX_SEND)")
    reason = {"account": acc}
    try:
        smtp = _connect(ep)
        try:
            _login(smtp, ep)
            refused = smtp.send_message(msg, from_addr=account.address, to_addrs=recipients)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    except SecretError as exc:
        raise errors.UpstreamError(f"the SMTP credentials of account '{acc}' cannot be read",
                                   data={**reason, "reason": "credentials"}) from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise errors.UpstreamError(f"SMTP authentication failed for account '{acc}'",
                                   data={**reason, "reason": "authentication_failed"}) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise errors.UpstreamError(f"SMTP server of account '{acc}' does not support {upstream_message(exc)}",
                                   data={**reason, "reason": "unsupported"}) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        refused_all = {addr: code for addr, (code, _) in exc.recipients.items()}
        raise errors.UpstreamError("the SMTP server refused every recipient",
                                   data={**reason, "reason": "recipients_refused", "refused": refused_all}) from exc
    except smtplib.SMTPSenderRefused as exc:
        raise errors.UpstreamError(f"the SMTP server refused the sender {account.address}",
                                   data={**reason, "reason": "sender_refused", "code": exc.smtp_code}) from exc
    except smtplib.SMTPResponseException as exc:
        raise errors.UpstreamError(f"the SMTP server of account '{acc}' refused the message: "
                                   f"{exc.smtp_code} {upstream_message(_text(exc.smtp_error))}",
                                   data={**reason, "reason": "refused", "code": exc.smtp_code}) from exc
    except ssl.SSLCertVerificationError as exc:
        raise errors.UpstreamError(f"TLS certificate of the SMTP server of account '{acc}' is not trusted: "
                                   f"{exc.verify_message}", data={**reason, "reason": "tls"}) from exc
    except TimeoutError as exc:
        raise errors.Timeout(f"SMTP server of account '{acc}' did not answer in time",
                             data={**reason, "reason": "timeout"}) from exc
    except (smtplib.SMTPException, OSError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        raise errors.ServiceUnavailable(f"SMTP server of account '{acc}' is unreachable: {what}",
                                        data={**reason, "reason": "unreachable"}) from exc
    return {
        "message_id": msg["Message-ID"],
        "accepted": [r for r in recipients if r not in refused],
        "refused": {addr: code for addr, (code, _) in refused.items()},
        "size": len(data),
    }
