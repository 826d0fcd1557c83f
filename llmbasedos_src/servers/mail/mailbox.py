"""What the mail methods do on one logged-in IMAP connection. Runs on the account's thread (see pool.py).

Reading opens folders read-only (EXAMINE) and fetches with BODY.PEEK, so it never marks a message seen;
only `set_flags` opens a folder read-write.
"""

from __future__ import annotations

from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from llmbasedos.protocol import errors
from llmbasedos.servers.mail import messages
from llmbasedos.servers.mail.pool import upstream_message
from llmbasedos.servers.mail.search import build_criteria

__all__ = ["list_folders", "list_messages", "fetch_raw", "set_flags", "check_folder_name"]

_MISSING = ("nonexistent", "doesn't exist", "does not exist", "no such", "not found", "unknown mailbox")
_STATUS_ITEMS = [b"MESSAGES", b"UNSEEN", b"UIDNEXT"]


def check_folder_name(folder: str) -> None:
    if not folder or any(ord(ch) < 32 or ord(ch) == 127 for ch in folder):
        raise errors.InvalidParams("params.folder: must be a folder name without control characters")


def _select(client: IMAPClient, account: str, folder: str, *, readonly: bool) -> dict[Any, Any]:
    check_folder_name(folder)
    try:
        return client.select_folder(folder, readonly=readonly)  # type: ignore[no-any-return]
    except IMAPClientAbortError:
        raise  # the connection is gone: the pool reconnects
    except IMAPClientError as exc:
        text = str(exc).lower()
        if any(marker in text for marker in _MISSING):
            raise errors.NotFound(f"folder '{folder}' not found in account '{account}'") from exc
        raise errors.UpstreamError(f"cannot open folder '{folder}' of account '{account}': "
                                   f"{upstream_message(exc)}") from exc


def list_folders(client: IMAPClient, *, with_status: bool) -> list[dict[str, Any]]:
    out = []
    for flags, delimiter, name in client.list_folders():
        names = messages.flag_names(flags)
        entry: dict[str, Any] = {
            "name": name,
            "delimiter": delimiter.decode("utf-8", "replace") if isinstance(delimiter, bytes) else delimiter,
            "flags": names,
        }
        special = [f for f in names if f.lower() in ("\\sent", "\\drafts", "\\trash", "\\junk", "\\archive",
                                                      "\\all", "\\flagged")]
        entry["special_use"] = special[0] if special else None
        if with_status and not any(f.lower() in ("\\noselect", "\\nonexistent") for f in names):
            status = client.folder_status(name, _STATUS_ITEMS)
            entry["messages"] = int(status.get(b"MESSAGES", 0))
            entry["unseen"] = int(status.get(b"UNSEEN", 0))
        out.append(entry)
    return out


def list_messages(client: IMAPClient, account: str, folder: str, *, search: dict[str, Any] | None, limit: int,
                  before_uid: int | None) -> dict[str, Any]:
    criteria, charset = build_criteria(search, before_uid)
    _select(client, account, folder, readonly=True)
    uids: list[int] = sorted(client.search(criteria, charset=charset), reverse=True) if criteria else []
    page = uids[:limit]
    fetched = client.fetch(page, messages.SUMMARY_FETCH) if page else {}
    items = [messages.summarize(uid, fetched[uid]) for uid in page if uid in fetched]
    return {
        "account": account,
        "folder": folder,
        "total": len(uids),
        "messages": items,
        "next_before_uid": page[-1] if len(uids) > limit and page else None,
    }


def fetch_raw(client: IMAPClient, account: str, folder: str, uid: int, *, max_size: int) -> dict[str, Any]:
    """The message's bytes, flags and size, read without setting \\Seen."""
    _select(client, account, folder, readonly=True)
    meta = client.fetch([uid], ["FLAGS", "RFC822.SIZE", "INTERNALDATE"]).get(uid)
    if meta is None:
        raise errors.NotFound(f"message UID {uid} not found in folder '{folder}' of account '{account}'")
    size = int(meta.get(b"RFC822.SIZE") or 0)
    if size > max_size:
        raise errors.PayloadTooLarge(f"message UID {uid} is {size} bytes; the limit is {max_size} "
                                     "(LLMBDO_MAIL_MAX_FETCH)")
    body = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {})
    raw = body.get(b"BODY[]")
    if not isinstance(raw, bytes):
        raise errors.NotFound(f"message UID {uid} not found in folder '{folder}' of account '{account}'")
    internal = meta.get(b"INTERNALDATE")
    return {
        "raw": raw,
        "flags": messages.flag_names(meta.get(b"FLAGS")),
        "size": size,
        "internal_date": internal.isoformat() if internal is not None else None,
    }


def set_flags(client: IMAPClient, account: str, folder: str, uid: int, *, seen: bool | None,
              flagged: bool | None) -> list[str]:
    _select(client, account, folder, readonly=False)
    if uid not in client.fetch([uid], ["FLAGS"]):
        raise errors.NotFound(f"message UID {uid} not found in folder '{folder}' of account '{account}'")
    add: list[bytes] = []
    remove: list[bytes] = []
    for value, flag in ((seen, b"\\Seen"), (flagged, b"\\Flagged")):
        if value is True:
            add.append(flag)
        elif value is False:
            remove.append(flag)
    if add:
        client.add_flags([uid], add, silent=True)
    if remove:
        client.remove_flags([uid], remove, silent=True)
    after = client.fetch([uid], ["FLAGS"]).get(uid, {})
    return messages.flag_names(after.get(b"FLAGS"))
