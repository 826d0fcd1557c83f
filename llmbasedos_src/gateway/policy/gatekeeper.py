"""Who a client is and what it may do: licence tier, client tokens, allowlists, limits, quotas, audit.

The gateway holds one `Policy`. Its per-call methods are synchronous, cheap and do no I/O (audit lines are
batched), so they are called straight from the event loop; they are also thread-safe. A background thread
writes the audit lines (every 0.1 s), the counters and the audit checkpoint (every 0.5 s), and re-reads the
licence when its file, its public key or the UTC day changes (checked every 2 s): no restart is needed to
install a licence. Token creations, changes and revocations by `llmbasedos token`, and expiries, are seen at
the next authentication, and by open connections within a tick: `clients` (live_clients.py) moves its
generation and the doors re-resolve their clients with `refresh`.

A client's rights are its own allowlist, within its tier, within the licence's tier. Its rate limit and
quotas are the stricter of its tier's and the licence tier's. The owner (owner token, or the gateway.sock
door) has the licence tier's full rights.

Files: `<config_dir>/lic.key`, `<config_dir>/licence_tiers.yaml`, `<config_dir>/licence_pub.pem` (optional);
`<data_dir>/gateway.db` (clients, counters, audit checkpoint), `<data_dir>/owner.token`,
`<data_dir>/audit.key`; `<log_dir>/audit.jsonl`. `LLMBDO_ALLOWED_ORIGINS` (comma list of origins) replaces
the default browser-origin allowlist (http/https pages on localhost, 127.0.0.1 and [::1], any port).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmbasedos.gateway.policy.audit import AuditLog, load_or_create_key, read_tail
from llmbasedos.gateway.policy.audit_files import rotation_from_env
from llmbasedos.gateway.policy.licence import LicenceStatus, evaluate, licence_path, public_key_source
from llmbasedos.gateway.policy.limits import DAY_SECONDS, Limiter, TokenReservation
from llmbasedos.gateway.policy.live_clients import LiveClients
from llmbasedos.gateway.policy.refusals import RefusalCounter
from llmbasedos.gateway.policy.rights import Rights, combine
from llmbasedos.gateway.policy.tiers import Tier, TierTable, load_tiers, tiers_path
from llmbasedos.gateway.policy.tokens import ClientRecord, TokenStore
from llmbasedos.loopback import is_loopback
from llmbasedos.protocol.errors import Forbidden, QuotaExceeded, RateLimited, Unauthorized
from llmbasedos.settings import Settings

__all__ = ["ClientIdentity", "Policy", "DB_NAME", "OWNER_TOKEN_FILE", "AUDIT_LOG_FILE", "AUDIT_KEY_FILE"]

log = logging.getLogger("llmbasedos.gateway.policy.gatekeeper")

DB_NAME = "gateway.db"
OWNER_TOKEN_FILE = "owner.token"
AUDIT_KEY_FILE = "audit.key"
AUDIT_LOG_FILE = "audit.jsonl"
_AUDIT_FLUSH_INTERVAL = 0.1  # audit lines reach the file within this
_FLUSH_EVERY = 5  # ticks between writes of counters and the audit checkpoint to SQLite
_WINDOWS_EVERY = 100  # ticks between writes of large rate windows (see Limiter.flush)
_LICENCE_EVERY = 20  # ticks between checks for a new licence file, key or day
_REFUSALS_EVERY = 10  # ticks between writes of the refusals counted since the last
_MAX_FIELD = 200


@dataclass(frozen=True)
class ClientIdentity:
    client_id: str
    name: str
    tier: str
    allow: tuple[str, ...]
    is_owner: bool
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The policy's caches are keyed by identity, so it is hashed several times per call: hash it once.
        object.__setattr__(self, "_hash", hash((self.client_id, self.name, self.tier, self.allow, self.is_owner)))

    def __hash__(self) -> int:
        return self._hash


def _normalize_origin(origin: str) -> str | None:
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}[parts.scheme]
    suffix = f":{port}" if port is not None and port != default_port else ""
    return f"{parts.scheme}://{host}{suffix}"


class Policy:
    def __init__(
        self,
        tiers: TierTable,
        config_dir: Path,
        tokens: TokenStore,
        limiter: Limiter,
        audit: AuditLog,
        owner: ClientRecord,
        owner_token_path: Path,
        owner_created: bool,
        allowed_origins: frozenset[str] | None,
    ) -> None:
        self.tiers = tiers
        self.config_dir = config_dir
        self.licence_file = licence_path(config_dir)
        self.owner_token_path = owner_token_path
        self.owner_created = owner_created  # the gateway prints how to use the token when True
        self._tokens = tokens
        self._limiter = limiter
        self._audit = audit
        self._owner = owner
        self._allowed_origins = allowed_origins
        self._reload_lock = threading.Lock()
        self._rights: dict[ClientIdentity, Rights] = {}
        self._allowed: dict[tuple[ClientIdentity, str], bool] = {}
        self._upstream_services: frozenset[str] = frozenset()
        self.clients = LiveClients(tokens)  # its generation moves when any client's rights may have changed
        self._licence_seen: tuple[Any, ...] = ()
        self._licence: LicenceStatus = self._evaluate_licence(self._licence_inputs())
        self._refusals = RefusalCounter()
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="policy-flush", daemon=True)
        self._flusher.start()

    @classmethod
    def load(cls, settings: Settings) -> Policy:
        """Read the configuration and state; create the owner token and audit key on first start.

        Raises TiersError for an invalid tiers file (the gateway must not start on a policy it cannot read).
        """
        tiers = load_tiers(tiers_path(settings.config_dir))
        audit_max_bytes, audit_keep = rotation_from_env()
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = settings.data_dir / DB_NAME
        env_origins = os.environ.get("LLMBDO_ALLOWED_ORIGINS", "").strip()
        origins = None
        if env_origins:
            origins = frozenset(
                o if o == "*" else (_normalize_origin(o) or o) for o in (s.strip() for s in env_origins.split(","))
                if o
            )
        with contextlib.ExitStack() as undo:  # a failure half-way closes what was opened
            tokens = TokenStore(db)
            undo.callback(tokens.close)
            owner_path = settings.data_dir / OWNER_TOKEN_FILE
            owner, created = tokens.ensure_owner(owner_path)
            limiter = Limiter(db)
            undo.callback(limiter.close)
            audit = AuditLog(settings.log_dir / AUDIT_LOG_FILE,
                             load_or_create_key(settings.data_dir / AUDIT_KEY_FILE), db,
                             max_bytes=audit_max_bytes, keep=audit_keep)
            undo.callback(audit.close)
            policy = cls(tiers, settings.config_dir, tokens, limiter, audit, owner, owner_path, created, origins)
            undo.pop_all()
        lic = policy._licence
        audit.append("start", tier=lic.tier, licence_valid=lic.valid, reason=lic.reason)
        if lic.valid:
            log.info("licence: tier %s for %s until %s", lic.tier, lic.user, lic.expires)
        else:
            log.warning("licence: %s; running with the %s tier", lic.reason, lic.tier)
        if created:
            log.info("created the owner token in %s (print it with `llmbasedos token owner`)", owner_path)
        return policy

    # -- licence

    def _licence_inputs(self) -> tuple[Any, ...]:
        """What the licence status depends on: the UTC day (expiry), the licence file and the public key."""

        def stat(path: str | Path) -> tuple[int, int, int] | None:
            try:
                st = os.stat(path)
            except (OSError, ValueError):
                return None
            return st.st_mtime_ns, st.st_size, st.st_ino

        pubkey = public_key_source(self.config_dir)
        return int(time.time() // DAY_SECONDS), stat(self.licence_file), pubkey, stat(pubkey) if pubkey else None

    def _evaluate_licence(self, inputs: tuple[Any, ...]) -> LicenceStatus:
        self._licence_seen = inputs
        return evaluate(self.licence_file, inputs[2], self.tiers)

    def reload_licence(self) -> bool:
        """Re-read the licence if its file, its key or the day changed; True when the status changed.

        The flusher thread calls this every few seconds, so installing a licence needs no restart.
        """
        with self._reload_lock:
            inputs = self._licence_inputs()
            if inputs == self._licence_seen:
                return False
            status = self._evaluate_licence(inputs)
            if status == self._licence:
                return False
            self._licence = status
            self._rights = {}
            self._allowed = {}
        self.clients.bump()  # identities that follow the licence's tier have a new tier
        self._audit.append("licence", tier=status.tier, licence_valid=status.valid, reason=status.reason)
        if status.valid:
            log.info("licence changed: tier %s for %s until %s", status.tier, status.user, status.expires)
        else:
            log.warning("licence changed: %s; running with the %s tier", status.reason, status.tier)
        return True

    def _current_licence(self) -> LicenceStatus:
        return self._licence

    @property
    def licence(self) -> LicenceStatus:
        return self._current_licence()

    # -- identities

    def _identity(self, record: ClientRecord) -> ClientIdentity:
        tier = record.tier or self._current_licence().tier
        return ClientIdentity(record.id, record.name, tier, record.allow, record.is_owner)

    def authenticate(self, token: str | None, *, transport: str, remote: str) -> ClientIdentity:
        """The client holding `token`; Unauthorized (audited) for a missing, unknown or revoked token."""
        if not token:
            self._refused(reason="no token", transport=transport, remote=remote)
            raise Unauthorized("A token is required")
        record = self._tokens.lookup(token)
        if record is None:
            self._refused(reason="unknown token", transport=transport, remote=remote)
            raise Unauthorized("Invalid token")
        if record.revoked is not None or record.expired():
            reason = "revoked token" if record.revoked is not None else "expired token"
            self._refused(reason=reason, client=record.id, name=record.name, transport=transport, remote=remote)
            raise Unauthorized("Invalid token" if record.revoked is not None else "Token expired")
        self._audit.append("auth", outcome="allowed", client=record.id, name=record.name, transport=transport,
                           remote=remote)
        return self._identity(record)

    def _refused(self, **fields: Any) -> None:
        """Audit a refused credential, at a bounded rate per remote address (see refusals.py)."""
        if self._refusals.first(str(fields.get("remote", ""))):
            self._audit.append("auth", outcome="denied", **fields)

    def _audit_refusals(self, *, everything: bool = False) -> None:
        for remote, count in self._refusals.due(everything=everything):
            self._audit.append("auth", outcome="denied", remote=remote, refusals=count,
                               reason=f"{count} refusals from {remote} in the last minute")

    def local_identity(self) -> ClientIdentity:
        return self._identity(self._owner)

    def identity_by_id(self, client_id: str, *, transport: str, remote: str) -> ClientIdentity:
        """The active client with this id, for a local service acting on that client's behalf (the agent
        calling back through gateway.sock). Unauthorized (audited) when the id is unknown, revoked or expired."""
        if client_id == self._owner.id:
            return self.local_identity()
        self.clients.poll()  # a change made a moment ago counts for this call already
        record = self.clients.active(client_id)
        if record is None:
            self._audit.append("auth", outcome="denied", reason="unknown, revoked or expired client id",
                               client=client_id[:_MAX_FIELD], transport=transport, remote=remote)
            raise Unauthorized("The client this call is made for is unknown, revoked or expired")
        return self._identity(record)

    def refresh(self, client: ClientIdentity, *, transport: str) -> ClientIdentity:
        """Who `client` is now (its allowlist, tier or the licence may have changed); Unauthorized (audited)
        once it is revoked or expired. Doors call it for open connections when `clients.generation` moved."""
        if client.is_owner:
            return self.local_identity()
        record = self.clients.active(client.client_id)
        if record is None:
            # The map may predate a client created a moment ago. Look again after a poll whatever it returns:
            # the policy's thread may be the one that just re-read the clients (it holds the lock meanwhile).
            self.clients.poll()
            record = self.clients.active(client.client_id)
        if record is None:
            self._audit.append("auth", outcome="denied", reason="revoked or expired during a connection",
                               client=client.client_id, name=client.name, transport=transport)
            raise Unauthorized("Token revoked or expired")
        return self._identity(record)

    def _rights_of(self, client: ClientIdentity) -> Rights:
        rights = self._rights.get(client)
        if rights is None:
            lic = self._current_licence()
            licence_tier = self.tiers.get(lic.tier)
            if client.is_owner or client.tier.upper() == licence_tier.name:
                tiers: tuple[Tier, ...] = (licence_tier,)
            elif client.tier in self.tiers:
                tiers = (self.tiers.get(client.tier), licence_tier)
            else:  # a tier since removed from the tiers file: the strictest reading, FREE within the licence
                tiers = (self.tiers.get("FREE"), licence_tier)
            rights = combine(tiers, ("*",) if client.is_owner else client.allow)
            if len(self._rights) > 10000:
                self._rights.clear()
            self._rights[client] = rights
        return rights

    # -- per call

    def set_upstream_services(self, names: set[str]) -> None:
        """The services that are upstream MCP servers (the router says so as they come and go): their methods
        also answer to `mcp.upstream.<service>.*` patterns (tiers.names_of)."""
        if names != self._upstream_services:
            self._upstream_services = frozenset(names)
            self._allowed = {}

    def is_allowed(self, client: ClientIdentity, method: str) -> bool:
        key = (client, method)
        allowed = self._allowed.get(key)
        if allowed is None:
            parts = method.split(".", 2)
            upstream = len(parts) == 3 and parts[1] in self._upstream_services
            allowed = self._rights_of(client).allows(method, upstream)
            if len(self._allowed) > 50000:  # method names come from clients: bound the cache
                self._allowed.clear()
            self._allowed[key] = allowed
        return allowed

    def admit(self, client: ClientIdentity, method: str) -> None:
        """Authorize, rate-limit and count one call, or raise Forbidden / RateLimited / QuotaExceeded.

        Refusals are audited here; an admitted call is audited once, by `record_call`, when it ends.
        """
        if not self.is_allowed(client, method):
            self._audit.append("authz", outcome="denied", client=client.client_id, name=client.name, method=method,
                               reason=f"not allowed for tier {client.tier}")
            raise Forbidden(f"{method} is not allowed for this client", {"method": method, "tier": client.tier})
        self.limit(client, method)

    def limit(self, client: ClientIdentity, method: str) -> None:
        """Rate-limit and count one request, or raise RateLimited / QuotaExceeded (audited). `admit` does this
        for calls; a request that needs no capability but costs a session (an MCP initialize) calls it alone."""
        rights = self._rights_of(client)
        try:
            self._limiter.admit(client.client_id, rights.rate, rights.window, rights.per_day)
        except (RateLimited, QuotaExceeded) as exc:
            outcome = "quota_exceeded" if isinstance(exc, QuotaExceeded) else "rate_limited"
            self._audit.append("limit", outcome=outcome, client=client.client_id, name=client.name, method=method)
            raise

    def record_call(self, client: ClientIdentity, method: str, outcome: str, duration_ms: float) -> None:
        """Audit an admitted call when it ends: who, what, how it ended, how long (never params or results).

        The gateway calls it for every admitted call, its own methods included; the entry is also the record
        of the allowed decision.
        """
        self._audit.write_call(
            client.client_id, client.name,
            method if len(method) <= _MAX_FIELD else method[:_MAX_FIELD] + "…",
            outcome if len(outcome) <= _MAX_FIELD else outcome[:_MAX_FIELD] + "…",
            # To the microsecond; int() rather than round(x, 3), which formats the float as decimal digits.
            int(duration_ms * 1000.0 + 0.5) / 1000.0,
        )

    # -- LLM token quotas

    def llm_allowed(self, client: ClientIdentity, alias: str, max_tokens: int | None) -> None:
        """Raise Forbidden or QuotaExceeded unless this client may ask model `alias` for `max_tokens`."""
        rights = self._rights_of(client)
        reason: str | None = None
        if not rights.llm_access:
            reason = f"LLM access is not included in tier {client.tier}"
        elif not rights.allows_model(alias):
            reason = f"model {alias!r} is not allowed for tier {client.tier}"
        elif (max_tokens is not None and rights.max_tokens_per_request is not None
              and max_tokens > rights.max_tokens_per_request):
            reason = f"max_tokens {max_tokens} exceeds the limit of {rights.max_tokens_per_request} per request"
        if reason is not None:
            self._audit.append("llm", outcome="denied", client=client.client_id, name=client.name, model=alias,
                               reason=reason)
            raise Forbidden(reason, {"model": alias, "tier": client.tier})
        try:
            self._limiter.check_tokens(client.client_id, rights.max_tokens_per_day, f"tier {client.tier}")
        except QuotaExceeded:
            self._audit.append("llm", outcome="quota_exceeded", client=client.client_id, name=client.name,
                               model=alias)
            raise

    def reserve_llm_tokens(self, client: ClientIdentity, tokens: int) -> TokenReservation:
        """Hold `tokens` of today's quota for one call; QuotaExceeded (audited) when nothing is left.

        Every reservation must be settled (`settle_llm_tokens`) once the call ends, however it ends.
        """
        try:
            return self._limiter.reserve(client.client_id, tokens, self._rights_of(client).max_tokens_per_day,
                                         f"tier {client.tier}")
        except QuotaExceeded:
            self._audit.append("llm", outcome="quota_exceeded", client=client.client_id, name=client.name)
            raise

    def settle_llm_tokens(self, client: ClientIdentity, reservation: TokenReservation, tokens: int) -> None:
        """Replace a reservation by the tokens the call used; a second settle of it changes nothing."""
        if self._limiter.settle(reservation, tokens) and tokens > 0:
            self._audit.append("llm", outcome="used", client=client.client_id, name=client.name, tokens=int(tokens))

    def record_llm_tokens(self, client: ClientIdentity, tokens: int) -> None:
        self._limiter.add_tokens(client.client_id, int(tokens))
        self._audit.append("llm", outcome="used", client=client.client_id, name=client.name, tokens=int(tokens))

    # -- reports

    def licence_status(self, client: ClientIdentity) -> dict[str, Any]:
        """The answer of mcp.licence.check for this client."""
        lic = self._current_licence()
        rights = self._rights_of(client)
        remaining = self._limiter.remaining(client.client_id, rights.rate, rights.window, rights.per_day,
                                            rights.max_tokens_per_day)
        return {
            **lic.to_dict(),
            "client": {"id": client.client_id, "name": client.name, "tier": client.tier, "owner": client.is_owner,
                       "allow": list(client.allow)},
            "limits": rights.limits(),
            "remaining": remaining.to_dict(),
        }

    def usage(self) -> dict[str, Any]:
        """Today's use per client id (with its name), for GET /status."""
        names = {r.id: r.name for r in self._tokens.list()}
        return {cid: {"name": names.get(cid, cid), **use} for cid, use in self._limiter.usage().items()}

    def recent_audit(self, limit: int = 50,
                     keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """The newest audit entries, newest first, read back from the log (for the status page)."""
        self._audit.flush()
        return read_tail(self._audit.path, limit, keep)

    def check_origin(self, origin: str | None) -> bool:
        """Whether a request with this Origin header may proceed (None: not a browser)."""
        if origin is None:
            return True
        normalized = _normalize_origin(origin)
        if self._allowed_origins is not None:
            return "*" in self._allowed_origins or (normalized is not None and normalized in self._allowed_origins)
        return normalized is not None and is_loopback(urlsplit(normalized).hostname)

    # -- lifecycle

    def _flush_loop(self) -> None:
        tick = 0
        while not self._stop.wait(_AUDIT_FLUSH_INTERVAL):
            tick += 1
            try:
                self.clients.poll()
            except Exception:
                log.exception("cannot re-read the clients")
            if tick % _REFUSALS_EVERY == 0:
                try:
                    self._audit_refusals()
                except Exception:
                    log.exception("cannot audit the refusals counted")
            if tick % _LICENCE_EVERY == 0:
                try:
                    self.reload_licence()
                except Exception:
                    log.exception("cannot re-read the licence")
            if tick % _FLUSH_EVERY == 0:
                self.flush(windows=tick % _WINDOWS_EVERY == 0)
            else:
                try:
                    self._audit.flush()
                except Exception:
                    log.exception("cannot write the audit log")

    def flush(self, windows: bool = True) -> None:
        """Write pending audit entries, counters and the audit checkpoint now (also done periodically)."""
        try:
            self._audit.flush()
            self._limiter.flush(windows)
            self._audit.checkpoint()
        except Exception:
            log.exception("cannot persist limits or the audit checkpoint")

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._flusher.join()
        self._audit_refusals(everything=True)
        try:
            self._limiter.close()
        finally:
            try:
                self._audit.close()
            finally:
                self._tokens.close()
