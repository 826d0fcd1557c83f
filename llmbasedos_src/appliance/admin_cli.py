"""The `token`, `licence` and `audit` subcommands of `llmbasedos`.

`register(subparsers)` adds them to the main parser; each leaf parser sets `func`, a handler taking the parsed
arguments and returning the exit code (0 success, 1 a negative answer such as an invalid licence or a broken
audit chain, 2 bad input or unusable state). They work while the gateway runs: state is shared through SQLite.

    llmbasedos token create NAME [--tier T] [--allow PATTERN ...] [--expires WHEN]
                                                                    prints the new token (only time it is shown)
    llmbasedos token update NAME|ID [--tier T|--no-tier] [--allow PATTERN ...] [--expires WHEN|--no-expiry]
    llmbasedos token list [--json]                                  never shows tokens or hashes
    llmbasedos token revoke NAME|ID
    llmbasedos token owner                                          prints the owner token (creates it if needed)
    llmbasedos licence keygen --out DIR
    llmbasedos licence issue --tier T --user U --expires YYYY-MM-DD --key PRIVATE.pem [--out FILE]
    llmbasedos licence inspect [FILE] [--pubkey PEM]
    llmbasedos audit verify

Every one takes `--state-dir DIR` (as `LLMBDO_STATE_DIR`). WHEN is a duration (30d, 12h, 45m, 90s, 2w) or an ISO
date (valid through that day, UTC) or date/time. A running gateway applies revocations, updates and expiries
to the connections already open within about a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmbasedos.files import atomic_write_text
from llmbasedos.gateway.policy import audit, licence, tiers
from llmbasedos.gateway.policy.expiry import ExpiryError, describe_expiry, parse_expiry
from llmbasedos.gateway.policy.gatekeeper import AUDIT_KEY_FILE, AUDIT_LOG_FILE, DB_NAME, OWNER_TOKEN_FILE
from llmbasedos.gateway.policy.store_health import StoreCorrupt
from llmbasedos.gateway.policy.tokens import UNCHANGED, TokenError, TokenStore, write_secret_file
from llmbasedos.settings import Settings

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(f"llmbasedos: {message}", file=sys.stderr)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(getattr(args, "state_dir", None))


def _store(settings: Settings) -> TokenStore:
    return TokenStore(settings.data_dir / DB_NAME)


def _validated_patterns(patterns: list[str]) -> list[str]:
    bad = [p for p in patterns if not tiers.valid_pattern(p)]
    if bad:
        raise TokenError(f"invalid capability pattern {bad[0]!r}: use mcp.x.y, mcp.x.* or *")
    return patterns


# -- token


def _check_tier(settings: Settings, tier: str | None) -> None:
    try:
        table = tiers.load_tiers(tiers.tiers_path(settings.config_dir))
    except tiers.TiersError as exc:
        raise TokenError(str(exc)) from None
    if tier is not None and tier not in table:
        raise TokenError(f"unknown tier {tier!r} (known: {', '.join(table.names())})")


def _expiry(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_expiry(text)
    except ExpiryError as exc:
        raise TokenError(str(exc)) from None


def _token_create(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        _check_tier(settings, args.tier)
        allow = _validated_patterns(args.allow or ["*"])
        expires = _expiry(args.expires)
        store = _store(settings)
        try:
            record, token = store.create(args.name, args.tier, allow, expires)
        finally:
            store.close()
    except TokenError as exc:
        _err(str(exc))
        return 2
    tier = f"tier {record.tier}" if record.tier else "the licence's tier"
    print(f"Created client {record.name} ({record.id}) with {tier}, allowed: {' '.join(record.allow)}, "
          f"expires: {describe_expiry(record.expires)}.", file=sys.stderr)
    print("This is the only time the token is shown:", file=sys.stderr)
    print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        records = store.list(include_revoked=args.all)
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        print("No clients.")
        return 0
    rows = [("ID", "NAME", "TIER", "ALLOW", "CREATED", "EXPIRES", "STATE")]
    for r in records:
        created = dt.datetime.fromtimestamp(r.created, dt.UTC).strftime("%Y-%m-%d %H:%M")
        state = "owner" if r.is_owner else ("revoked" if not r.active else "expired" if r.expired() else "active")
        rows.append((r.id, r.name, r.tier or "(licence)", ",".join(r.allow), created, describe_expiry(r.expires),
                     state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    store = _store(_settings(args))
    try:
        record = store.revoke(args.client)
    except TokenError as exc:
        _err(str(exc))
        return 2
    finally:
        store.close()
    print(f"Revoked client {record.name} ({record.id}).")
    return 0


def _token_update(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        if args.tier is not None and args.no_tier:
            raise TokenError("give --tier or --no-tier, not both")
        if args.expires is not None and args.no_expiry:
            raise TokenError("give --expires or --no-expiry, not both")
        if args.tier is None and not args.no_tier and args.allow is None and args.expires is None \
                and not args.no_expiry:
            raise TokenError("nothing to change: give --tier, --no-tier, --allow, --expires or --no-expiry")
        _check_tier(settings, args.tier)
        changes: dict[str, Any] = {
            "tier": None if args.no_tier else args.tier if args.tier is not None else UNCHANGED,
            "allow": _validated_patterns(args.allow) if args.allow is not None else UNCHANGED,
            "expires": None if args.no_expiry else _expiry(args.expires) if args.expires is not None else UNCHANGED,
        }
        store = _store(settings)
        try:
            record = store.update(args.client, **changes)
        finally:
            store.close()
    except TokenError as exc:
        _err(str(exc))
        return 2
    tier = f"tier {record.tier}" if record.tier else "the licence's tier"
    print(f"Updated client {record.name} ({record.id}): {tier}, allowed: {' '.join(record.allow)}, "
          f"expires: {describe_expiry(record.expires)}.")
    return 0


def _token_owner(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = settings.data_dir / OWNER_TOKEN_FILE
    store = _store(settings)
    try:
        _owner, created = store.ensure_owner(path)
    except OSError as exc:
        _err(f"cannot write the owner token file: {exc.strerror}")
        return 2
    finally:
        store.close()
    if created:
        print(f"Created a new owner token in {path}.", file=sys.stderr)
    print(path.read_text(encoding="utf-8").strip())
    return 0


# -- licence


def _licence_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    private_path, public_path = out / "licence_priv.pem", out / "licence_pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            _err(f"{path} already exists; not overwriting a key")
            return 2
    private, public = licence.generate_keypair()
    try:
        write_secret_file(private_path, private.decode())
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(public)
    except OSError as exc:
        _err(f"cannot write the key pair: {exc.strerror}")
        return 2
    print(f"Private key (keep it secret, mode 0600): {private_path}")
    print(f"Public key: {public_path}")
    print("Install the public key as licence_pub.pem in the appliance's config directory "
          "(or set LLMBDO_LICENCE_PUBKEY) so only licences you sign are accepted.")
    return 0


def _licence_issue(args: argparse.Namespace) -> int:
    try:
        expires = dt.date.fromisoformat(args.expires)
    except ValueError:
        _err(f"--expires must be a date YYYY-MM-DD, not {args.expires!r}")
        return 2
    try:
        key = licence.load_private_key(Path(args.key).expanduser())
        text = licence.issue(key, args.tier, args.user, expires)
    except licence.LicenceError as exc:
        _err(str(exc))
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        atomic_write_text(Path(args.out).expanduser(), text, mode=0o644)
    except OSError as exc:
        _err(f"cannot write {args.out}: {exc.strerror}")
        return 2
    print(f"Wrote a {args.tier.upper()} licence for {args.user}, valid through {expires.isoformat()}, to {args.out}")
    return 0


def _licence_inspect(args: argparse.Namespace) -> int:
    settings = _settings(args)
    path = Path(args.file).expanduser() if args.file else licence.licence_path(settings.config_dir)
    pubkey = args.pubkey if args.pubkey else licence.public_key_source(settings.config_dir)
    try:
        table = tiers.load_tiers(tiers.tiers_path(settings.config_dir))
    except tiers.TiersError as exc:
        _err(str(exc))
        return 2
    status = licence.evaluate(path, pubkey, table)
    if args.json:
        print(json.dumps({"file": str(path), **status.to_dict()}, indent=2))
    else:
        print(f"file:      {path}")
        print(f"tier:      {status.licence_tier or '-'}")
        print(f"user:      {status.user or '-'}")
        print(f"expires:   {status.expires.isoformat() if status.expires else '-'}")
        signature = "checked" if status.signature_checked else ("present, not checked (no public key)"
                                                                if status.signed else "none")
        print(f"signature: {signature}")
        print(f"valid:     {'yes' if status.valid else 'no: ' + (status.reason or '')}")
        print(f"in force:  {status.tier}")
    return 0 if status.valid else 1


# -- audit


def _audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    log_path = Path(args.file).expanduser() if args.file else settings.log_dir / AUDIT_LOG_FILE
    key_path = settings.data_dir / AUDIT_KEY_FILE
    try:
        key = audit.load_key(key_path)
    except FileNotFoundError:
        _err(f"no audit key in {settings.data_dir}: the gateway has not run with this state directory")
        return 2
    except (OSError, ValueError) as exc:
        _err(f"cannot read the audit key: {getattr(exc, 'strerror', None) or exc}")
        return 2
    checkpoint = None if args.file else audit.read_checkpoint(settings.data_dir / DB_NAME)
    result = audit.verify(log_path, key, checkpoint)
    if args.json:
        print(json.dumps({"file": str(log_path), **dataclasses.asdict(result)}))
    else:
        print(f"{log_path}: {result.describe()}")
    return 0 if result.ok else 1


# -- wiring


def _store_checked(handler: Handler) -> Handler:
    """The handler, with a corrupt database reported in the gateway's own words (exit 2), not as a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except StoreCorrupt as exc:
            _err(str(exc))
            return 2

    return run


def _add(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    # SUPPRESS: an absent option must not overwrite a --state-dir the main parser already parsed.
    parser.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="state directory (default: $LLMBDO_STATE_DIR)")
    parser.set_defaults(func=_store_checked(handler))
    return parser


def _needs_subcommand(parser: argparse.ArgumentParser) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        parser.print_usage(sys.stderr)
        _err(f"{parser.prog}: a subcommand is required")
        return 2

    return handler


def register(subparsers: Any) -> None:
    """Add `token`, `licence` and `audit` to the subparsers of the main `llmbasedos` parser."""
    token = subparsers.add_parser("token", help="create, list and revoke client tokens",
                                  description="Client tokens for the gateway's TCP doors.")
    token.set_defaults(func=_needs_subcommand(token))
    tsub = token.add_subparsers(dest="token_command", metavar="{create,update,list,revoke,owner}")
    expires_help = ("when the token stops working: a duration (30d, 12h, 45m, 90s, 2w) or an ISO date (valid "
                    "through that day, UTC) or date/time")
    allow_help = ("capabilities the client may call: mcp.x.y, mcp.x.* or *; admin.read also shows it the whole "
                  "status, metrics and audit")
    p = _add(tsub, "create", _token_create, "create a client and print its token once")
    p.add_argument("name", help="client name (letters, digits, _ . @ -)")
    p.add_argument("--tier", help="the client's tier (default: the licence's tier)")
    p.add_argument("--allow", nargs="+", metavar="PATTERN", help=allow_help + " (default: * within its tier)")
    p.add_argument("--expires", metavar="WHEN", help=expires_help + " (default: never)")
    p = _add(tsub, "update", _token_update,
             "change a client's tier, allowlist or expiry in place; open connections follow at once")
    p.add_argument("client", metavar="NAME|ID")
    p.add_argument("--tier", help="the client's new tier")
    p.add_argument("--no-tier", action="store_true", help="follow the licence's tier again")
    p.add_argument("--allow", nargs="+", metavar="PATTERN", help=allow_help + " (replaces the list)")
    p.add_argument("--expires", metavar="WHEN", help=expires_help)
    p.add_argument("--no-expiry", action="store_true", help="never expire")
    p = _add(tsub, "list", _token_list, "list clients (never their tokens)")
    p.add_argument("--all", action=argparse.BooleanOptionalAction, default=True,
                   help="include revoked clients (default: yes)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _add(tsub, "revoke", _token_revoke, "revoke a client's token; the gateway refuses it at once")
    p.add_argument("client", metavar="NAME|ID")
    _add(tsub, "owner", _token_owner, "print the owner token")

    lic = subparsers.add_parser("licence", help="issue and inspect licences",
                                description="Issue (sign) and inspect lic.key licences.")
    lic.set_defaults(func=_needs_subcommand(lic))
    lsub = lic.add_subparsers(dest="licence_command", metavar="{keygen,issue,inspect}")
    p = _add(lsub, "keygen", _licence_keygen, "make an Ed25519 key pair for signing licences")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for licence_priv.pem and licence_pub.pem")
    p = _add(lsub, "issue", _licence_issue, "write a signed licence")
    p.add_argument("--tier", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="last day of validity (UTC)")
    p.add_argument("--key", required=True, metavar="PRIVATE.pem", help="the private key from `licence keygen`")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p = _add(lsub, "inspect", _licence_inspect, "show a licence and whether it is valid (exit 1 if not)")
    p.add_argument("file", nargs="?", help="licence file (default: the configured lic.key)")
    p.add_argument("--pubkey", metavar="PEM", help="public key to check the signature with (default: configured)")
    p.add_argument("--json", action="store_true", help="print JSON")

    aud = subparsers.add_parser("audit", help="check the audit log", description="The HMAC-chained audit log.")
    aud.set_defaults(func=_needs_subcommand(aud))
    asub = aud.add_subparsers(dest="audit_command", metavar="{verify}")
    p = _add(asub, "verify", _audit_verify, "check the whole chain; report the first broken entry (exit 1)")
    p.add_argument("--file", metavar="FILE", help="audit log to check (default: the state's; no tail check)")
    p.add_argument("--json", action="store_true", help="print JSON")
