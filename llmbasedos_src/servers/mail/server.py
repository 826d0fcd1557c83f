"""The mail server: IMAP accounts, messages, attachments, calendar invitations, and sending over SMTP.

    python -m llmbasedos.servers.mail

Environment (besides the common LLMBDO_* settings):
    LLMBDO_MAIL_ACCOUNTS    the accounts file (default: <config dir>/mail_accounts.yaml; missing = no accounts)
    LLMBDO_MAIL_MAX_SEND    largest message mcp.mail.send accepts, in bytes (default: 10 MiB)
    LLMBDO_MAIL_MAX_FETCH   largest message mcp.mail.getMessage reads, in bytes (default: 25 MiB)
    LLMBDO_MAIL_MAX_BODY    characters of each body returned before it is cut (default: 1 Mi)
    plus whatever variables the accounts file names in password_env / oauth2_token_env.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from llmbasedos.backend.server import CallContext, MCPServer, method
from llmbasedos.logs import setup_logging
from llmbasedos.protocol import errors
from llmbasedos.protocol.caps import CapsError
from llmbasedos.servers.mail import mailbox, messages, smtp
from llmbasedos.servers.mail.accounts import Account, AccountsError, accounts_path, load_accounts
from llmbasedos.servers.mail.ical import IcsError, parse_ics
from llmbasedos.servers.mail.pool import AccountPool
from llmbasedos.settings import Settings

__all__ = ["MailServer"]

_MIB = 1024 * 1024


def _env_size(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        size = int(value)
    except ValueError:
        raise AccountsError(f"{name}: must be a number of bytes (got {value!r})") from None
    if size <= 0:
        raise AccountsError(f"{name}: must be a positive number of bytes")
    return size


class MailServer(MCPServer):
    service_name: ClassVar[str] = "mail"
    caps_file: ClassVar[Path] = Path(__file__).with_name("caps.json")

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        # imapclient logs whole commands and responses at DEBUG: message contents stay out of our logs.
        logging.getLogger("imapclient").setLevel(max(logging.INFO, logging.getLogger().level))
        self.max_send = _env_size("LLMBDO_MAIL_MAX_SEND", 10 * _MIB)
        self.max_fetch = _env_size("LLMBDO_MAIL_MAX_FETCH", 25 * _MIB)
        self.max_body = _env_size("LLMBDO_MAIL_MAX_BODY", _MIB)
        path = accounts_path(self.settings.config_dir)
        self.accounts: dict[str, Account] = load_accounts(path)
        self.pools = {acc_id: AccountPool(acc) for acc_id, acc in self.accounts.items()}
        self.log.info("%d mail account(s) configured: %s", len(self.accounts), ", ".join(self.accounts) or "none")

    @classmethod
    def main(cls) -> None:
        settings = Settings.from_env()
        setup_logging(settings.log_level, settings.log_format)
        try:
            server = cls(settings)
        except (CapsError, AccountsError) as exc:
            logging.getLogger("llmbasedos.mail").error("refusing to start: %s", exc)
            raise SystemExit(2) from None
        server.run()
        # Every call has been answered and every connection closed politely; an account thread may still be
        # blocked on a silent server until its timeout, and the interpreter would wait for it at exit.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    async def on_stop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, pool.close) for pool in self.pools.values()),
                             return_exceptions=True)

    def _pool(self, account: str) -> AccountPool:
        pool = self.pools.get(account)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none configured"
            raise errors.NotFound(f"unknown mail account '{account}' (accounts: {known})")
        return pool

    # -- methods -------------------------------------------------------------------------------------

    @method("mcp.mail.listAccounts")
    async def list_accounts(self, params: dict[str, Any], ctx: CallContext) -> Any:
        return [acc.describe() for acc in self.accounts.values()]

    @method("mcp.mail.listFolders")
    async def list_folders(self, params: dict[str, Any], ctx: CallContext) -> Any:
        with_status = bool(params.get("status", False))
        return await self._pool(params["account"]).run(lambda c: mailbox.list_folders(c, with_status=with_status))

    @method("mcp.mail.listMessages")
    async def list_messages(self, params: dict[str, Any], ctx: CallContext) -> Any:
        account = params["account"]
        folder = params.get("folder", "INBOX")
        mailbox.check_folder_name(folder)
        return await self._pool(account).run(lambda c: mailbox.list_messages(
            c, account, folder, search=params.get("search"), limit=params.get("limit", 50),
            before_uid=params.get("before_uid")))

    @method("mcp.mail.getMessage")
    async def get_message(self, params: dict[str, Any], ctx: CallContext) -> Any:
        account = params["account"]
        folder = params.get("folder", "INBOX")
        uid = params["uid"]
        mailbox.check_folder_name(folder)
        fetched = await self._pool(account).run(
            lambda c: mailbox.fetch_raw(c, account, folder, uid, max_size=self.max_fetch))
        head = {"account": account, "folder": folder, "uid": uid}
        index = params.get("attachment")
        loop = asyncio.get_running_loop()
        # MIME parsing is CPU work on up to LLMBDO_MAIL_MAX_FETCH bytes: off the event loop.
        if index is not None:
            att = await loop.run_in_executor(self.executor, messages.get_attachment, fetched["raw"], index)
            if len(att["content_base64"]) > self.settings.max_frame - 64 * 1024:
                raise errors.PayloadTooLarge(f"attachment {index} is too large to return in one frame "
                                             f"({att['size']} bytes)")
            return {**head, "attachment": att}
        max_body = params.get("max_body", self.max_body)
        parsed = await loop.run_in_executor(self.executor, lambda: messages.parse_message(fetched["raw"],
                                                                                           max_body=max_body))
        return {**head, "flags": fetched["flags"], "size": fetched["size"],
                "internal_date": fetched["internal_date"], **parsed}

    @method("mcp.mail.setFlags")
    async def set_flags(self, params: dict[str, Any], ctx: CallContext) -> Any:
        account = params["account"]
        folder = params.get("folder", "INBOX")
        uid = params["uid"]
        mailbox.check_folder_name(folder)
        seen, flagged = params.get("seen"), params.get("flagged")
        if seen is None and flagged is None:
            raise errors.InvalidParams("params: give seen, flagged or both")
        flags = await self._pool(account).run(
            lambda c: mailbox.set_flags(c, account, folder, uid, seen=seen, flagged=flagged))
        return {"account": account, "folder": folder, "uid": uid, "flags": flags}

    @method("mcp.mail.parseIcalendar")
    def parse_icalendar(self, params: dict[str, Any], ctx: CallContext) -> Any:
        try:
            return parse_ics(params["ics"])
        except IcsError as exc:
            raise errors.InvalidParams(str(exc)) from None

    @method("mcp.mail.send")
    def send(self, params: dict[str, Any], ctx: CallContext) -> Any:
        account = self.accounts.get(params["account"])
        if account is None:
            self._pool(params["account"])  # raises the NotFound that names the known accounts
            raise AssertionError("unreachable")
        msg, recipients = smtp.compose(account, params)
        result = smtp.send(account, msg, recipients, max_size=self.max_send)
        self.log.info("sent a message from account %s to %d recipient(s)", account.id, len(result["accepted"]))
        return result
