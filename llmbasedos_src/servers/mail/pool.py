"""One IMAP connection per account, kept open between calls and reopened when the server dropped it.

Each account has its own single worker thread: its calls run one at a time on its connection, and a dead or
slow server only ever holds that account's thread, never the others' nor the server's shared pool. This is
also where IMAP and socket exceptions become JSON-RPC errors (the edge: nothing above sees imapclient's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from llmbasedos.protocol import errors
from llmbasedos.servers.mail.accounts import Account, Endpoint, SecretError

__all__ = ["AccountPool", "tls_context", "upstream_message"]

log = logging.getLogger("llmbasedos.mail.pool")

T = TypeVar("T")
_REFUSED_FOR = 60.0  # seconds during which a refused secret is not offered to the server again


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """Certificate and host name checked, always; `ca_file` only adds trust for a private server."""
    return ssl.create_default_context(cafile=endpoint.ca_file)


def upstream_message(exc: BaseException | str, limit: int = 200) -> str:
    """The server's own words, short and on one line, for an error a client may read."""
    text = " ".join(str(exc).split())
    return text[:limit]


class AccountPool:
    """The connection of one account, used only from the account's own thread."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._client: IMAPClient | None = None
        self._refused: tuple[float, bytes] | None = None  # when, and a hash of the secret the server refused
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mail-{account.id}")

    async def run(self, fn: Callable[[IMAPClient], T]) -> T:
        """Run `fn(client)` on the account's thread with a logged-in connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def close(self) -> None:
        """Log out and stop the thread (called at shutdown, from any thread).

        A call stuck on a silent server holds the lock until its timeout: then there is nothing to log out of
        that could be done politely, and shutdown does not wait for it.
        """
        if self._lock.acquire(timeout=2):
            try:
                self._discard(logout=True)
            finally:
                self._lock.release()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- on the account's thread -------------------------------------------------------------------

    def _call(self, fn: Callable[[IMAPClient], T]) -> T:
        with self._lock:
            # One reconnect per call, and only when a connection that served earlier calls has gone away:
            # a fresh connection that fails tells the truth about the server, so it is reported at once.
            for attempt in (1, 2):
                reused = self._client is not None
                client = self._client if self._client is not None else self._open()
                self._client = client
                try:
                    return fn(client)
                except errors.RPCError:
                    raise
                except TimeoutError as exc:
                    self._discard()
                    raise errors.Timeout(f"IMAP server of account '{self.account.id}' did not answer in time",
                                         data=self._data("timeout")) from exc
                except (IMAPClientAbortError, OSError, EOFError) as exc:
                    self._discard()
                    if reused and attempt == 1:
                        log.info("connection of account %s was lost (%s); reconnecting", self.account.id,
                                 exc.__class__.__name__)
                        continue
                    raise errors.ServiceUnavailable(
                        f"connection to the IMAP server of account '{self.account.id}' was lost",
                        data=self._data("connection_lost")) from exc
                except IMAPClientError as exc:
                    raise errors.UpstreamError(
                        f"IMAP server of account '{self.account.id}' refused the command: {upstream_message(exc)}",
                        data=self._data("imap_error")) from exc
            raise AssertionError("unreachable")

    def _data(self, reason: str) -> dict[str, str]:
        return {"account": self.account.id, "reason": reason}

    def _open(self) -> IMAPClient:
        ep = self.account.imap
        acc = self.account.id
        secret = self._secret(ep)
        fingerprint = hashlib.sha256(secret.encode()).digest() if secret is not None else b""
        refused = self._refused
        if refused is not None and refused[1] == fingerprint and time.monotonic() - refused[0] < _REFUSED_FOR:
            # The server refused this very secret moments ago: asking again would only look like password
            # guessing, which gets accounts locked. A changed secret (file or variable) is tried at once.
            raise self._auth_failed()
        try:
            ctx = tls_context(ep) if ep.security != "none" else None
            client = IMAPClient(ep.host, port=ep.port, ssl=ep.security == "tls", ssl_context=ctx,
                                timeout=SocketTimeout(connect=ep.connect_timeout, read=ep.timeout))
        except ssl.SSLCertVerificationError as exc:
            raise errors.UpstreamError(f"TLS certificate of the IMAP server of account '{acc}' is not trusted: "
                                       f"{exc.verify_message}", data=self._data("tls")) from exc
        except TimeoutError as exc:
            raise errors.ServiceUnavailable(f"IMAP server of account '{acc}' is unreachable: connection timed out",
                                            data=self._data("unreachable")) from exc
        except (OSError, IMAPClientError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
            raise errors.ServiceUnavailable(f"IMAP server of account '{acc}' is unreachable: {reason}",
                                            data=self._data("unreachable")) from exc
        try:
            self._login(client, ep, secret)
        except errors.UpstreamError as exc:
            if isinstance(exc.data, dict) and exc.data.get("reason") == "authentication_failed":
                self._refused = (time.monotonic(), fingerprint)
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        self._refused = None
        log.info("connected account %s", acc)
        return client

    def _secret(self, ep: Endpoint) -> str | None:
        source = ep.oauth2_token or ep.password
        if source is None:
            return None
        try:
            return source.read()
        except SecretError as exc:
            log.error("account %s: %s", self.account.id, exc)
            raise errors.UpstreamError(f"the credentials of account '{self.account.id}' cannot be read",
                                       data=self._data("credentials")) from None

    def _auth_failed(self) -> errors.UpstreamError:
        return errors.UpstreamError(f"authentication failed for account '{self.account.id}'",
                                    data=self._data("authentication_failed"))

    def _login(self, client: IMAPClient, ep: Endpoint, secret: str | None) -> None:
        acc = self.account.id
        try:
            if ep.security == "starttls":
                client.starttls(tls_context(ep))
            if secret is None:
                return
            if ep.oauth2_token is not None:
                client.oauth2_login(ep.user, secret)
            else:
                client.login(ep.user, secret)
        except LoginError as exc:
            raise self._auth_failed() from exc
        except ssl.SSLCertVerificationError as exc:
            raise errors.UpstreamError(f"TLS certificate of the IMAP server of account '{acc}' is not trusted: "
                                       f"{exc.verify_message}", data=self._data("tls")) from exc
        except (OSError, IMAPClientError) as exc:
            if isinstance(exc, IMAPClientError) and "STARTTLS" in str(exc).upper():
                raise errors.UpstreamError(f"IMAP server of account '{acc}' does not offer STARTTLS",
                                           data=self._data("tls")) from exc
            raise errors.ServiceUnavailable(f"IMAP server of account '{acc}' closed the connection during login",
                                            data=self._data("unreachable")) from exc

    def _discard(self, logout: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if logout:
                client.logout()
            else:
                client.shutdown()
