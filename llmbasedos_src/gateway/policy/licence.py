"""The appliance's licence (`lic.key`): tier, user, expiry, and an optional Ed25519 signature.

Two forms are read:

    # YAML mapping (what `llmbasedos licence issue` writes)
    tier: PRO
    user: alice@example.org
    expires: 2027-12-31
    signature: <base64 Ed25519 signature of the canonical form>

    PRO:alice@example.org:2027-12-31      # legacy one-line form, never signed

The canonical form that is signed is `llmbasedos-licence-v1\\n` followed by the compact JSON (sorted keys,
UTF-8) of every field but `signature`, dates written YYYY-MM-DD.

When a public key is configured (`<config_dir>/licence_pub.pem`, or `LLMBDO_LICENCE_PUBKEY`: a PEM file path,
PEM text, or the raw 32-byte key in base64), unsigned and badly signed licences are invalid. A licence is
valid through its expiry day (UTC). A missing, invalid or expired licence means the FREE tier, and the status
says why.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FALLBACK_TIER",
    "Licence",
    "LicenceError",
    "LicenceStatus",
    "canonical_bytes",
    "evaluate",
    "generate_keypair",
    "issue",
    "licence_path",
    "load_private_key",
    "load_public_key",
    "parse_licence",
    "public_key_source",
    "read_licence",
    "verify_signature",
]

FALLBACK_TIER = "FREE"
_DOMAIN = b"llmbasedos-licence-v1\n"
_LEGACY = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.*):(\d{4}-\d{2}-\d{2})$")
_TIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_MAX_LICENCE_BYTES = 64 * 1024


class LicenceError(ValueError):
    """The licence, or a key, cannot be read or is malformed; the message says what is wrong."""


@dataclass(frozen=True)
class Licence:
    tier: str
    user: str
    expires: dt.date
    signature: bytes | None
    fields: Mapping[str, Any]  # every field but the signature, as signed
    legacy: bool = False


@dataclass(frozen=True)
class LicenceStatus:
    tier: str  # the tier in force: the licence's when valid, FREE otherwise
    valid: bool
    reason: str | None  # why the licence is not in force (None when valid)
    licence_tier: str | None  # the tier the licence claims
    user: str | None
    expires: dt.date | None
    signed: bool
    signature_checked: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "valid": self.valid,
            "reason": self.reason,
            "licence_tier": self.licence_tier,
            "user": self.user,
            "expires": self.expires.isoformat() if self.expires else None,
            "signed": self.signed,
            "signature_checked": self.signature_checked,
        }


def licence_path(config_dir: Path) -> Path:
    env = os.environ.get("LLMBDO_LICENCE_FILE")
    return Path(env) if env else config_dir / "lic.key"


def _json_value(value: Any, name: str) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_json_value(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, name) for k, v in value.items()}
    raise LicenceError(f"field {name!r} has an unsupported value")


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes a licence signature covers: every field but `signature`."""
    body = {k: _json_value(v, k) for k, v in fields.items() if k != "signature"}
    return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise LicenceError("field 'expires' must be a date YYYY-MM-DD")


def parse_licence(text: str) -> Licence:
    """Parse either licence form. Raises LicenceError naming the fault."""
    stripped = text.strip()
    if not stripped:
        raise LicenceError("the licence file is empty")
    legacy = _LEGACY.match(stripped) if "\n" not in stripped else None
    if legacy:
        tier, user, expires = legacy.groups()
        fields = {"tier": tier, "user": user, "expires": expires}
        return Licence(tier.upper(), user, _parse_date(expires), None, fields, legacy=True)
    try:
        data = yaml.safe_load(stripped)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LicenceError(f"not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise LicenceError("expected a YAML mapping (tier, user, expires) or the form TIER:user:YYYY-MM-DD")
    for key in ("tier", "user", "expires"):
        if key not in data:
            raise LicenceError(f"missing field {key!r}")
    tier, user = data["tier"], data["user"]
    if not isinstance(tier, str) or not _TIER_RE.match(tier):
        raise LicenceError("field 'tier' must be a tier name (letters, digits, _ and -)")
    if not isinstance(user, str) or not user.strip():
        raise LicenceError("field 'user' must be a non-empty string")
    expires = _parse_date(data["expires"])
    signature: bytes | None = None
    if "signature" in data and data["signature"] is not None:
        raw = data["signature"]
        try:
            signature = base64.b64decode(str(raw).strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LicenceError("field 'signature' is not base64") from None
    fields = {str(k): _json_value(v, str(k)) for k, v in data.items() if k != "signature"}
    return Licence(tier.upper(), user, expires, signature, fields)


def read_licence(path: Path) -> Licence:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_LICENCE_BYTES + 1)
    except FileNotFoundError:
        raise  # not a malformed licence: the caller says "no licence file"
    except OSError as exc:
        raise LicenceError(f"cannot read the licence file: {exc.strerror}") from None
    if len(raw) > _MAX_LICENCE_BYTES:
        raise LicenceError("the licence file is too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LicenceError("the licence file is not UTF-8 text") from None
    return parse_licence(text)


def public_key_source(config_dir: Path) -> str | None:
    """Where the public key comes from (env value or the default file), or None when none is configured."""
    env = os.environ.get("LLMBDO_LICENCE_PUBKEY")
    if env:
        return env
    default = config_dir / "licence_pub.pem"
    return str(default) if default.exists() else None


def load_public_key(source: str) -> Ed25519PublicKey:
    """A public key from PEM text, a PEM file path, or base64 of the raw 32 bytes."""
    data: bytes
    if source.lstrip().startswith("-----BEGIN"):
        data = source.encode()
    elif os.path.exists(source):
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise LicenceError(f"cannot read the public key: {exc.strerror}") from None
    else:
        try:
            raw = base64.b64decode(source.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LicenceError("the public key is neither a PEM file, PEM text nor base64") from None
        if len(raw) != 32:
            raise LicenceError("a raw Ed25519 public key has 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise LicenceError("the public key is not a valid PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LicenceError("the public key is not an Ed25519 key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LicenceError(f"cannot read the private key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise LicenceError("the private key is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenceError("the private key is not an Ed25519 key")
    return key


def verify_signature(licence: Licence, key: Ed25519PublicKey) -> str | None:
    """None when the signature is good, else why not."""
    if licence.signature is None:
        return "the licence is not signed and a public key is configured"
    try:
        key.verify(licence.signature, canonical_bytes(licence.fields))
    except InvalidSignature:
        return "the licence signature does not match (wrong key or edited licence)"
    return None


def evaluate(
    path: Path,
    pubkey_source: str | None,
    known_tiers: Container[str],
    today: dt.date | None = None,
) -> LicenceStatus:
    """The licence in force at `today` (UTC), falling back to FREE with the reason."""
    today = today or dt.datetime.now(dt.UTC).date()

    def fallback(reason: str, lic: Licence | None = None, checked: bool = False) -> LicenceStatus:
        return LicenceStatus(
            tier=FALLBACK_TIER, valid=False, reason=reason,
            licence_tier=lic.tier if lic else None, user=lic.user if lic else None,
            expires=lic.expires if lic else None, signed=bool(lic and lic.signature), signature_checked=checked,
        )

    try:
        lic = read_licence(path)
    except FileNotFoundError:
        return fallback("no licence file")
    except LicenceError as exc:
        return fallback(f"invalid licence: {exc}")
    checked = False
    if pubkey_source is not None:
        try:
            key = load_public_key(pubkey_source)
        except LicenceError as exc:
            return fallback(f"cannot check the licence: {exc}", lic)
        problem = verify_signature(lic, key)
        if problem:
            return fallback(problem, lic)
        checked = True
    if lic.tier not in known_tiers:
        return fallback(f"unknown tier {lic.tier!r}", lic, checked)
    if lic.expires < today:
        return fallback(f"the licence expired on {lic.expires.isoformat()}", lic, checked)
    return LicenceStatus(
        tier=lic.tier, valid=True, reason=None, licence_tier=lic.tier, user=lic.user, expires=lic.expires,
        signed=lic.signature is not None, signature_checked=checked,
    )


def issue(key: Ed25519PrivateKey, tier: str, user: str, expires: dt.date) -> str:
    """A signed licence in YAML."""
    if not _TIER_RE.match(tier):
        raise LicenceError("the tier must be a name of letters, digits, _ and -")
    if not user.strip() or "\n" in user:
        raise LicenceError("the user must be a non-empty single line")
    fields = {"tier": tier.upper(), "user": user, "expires": expires.isoformat()}
    signature = base64.b64encode(key.sign(canonical_bytes(fields))).decode()
    body = yaml.safe_dump({**fields, "signature": signature}, sort_keys=False, allow_unicode=True)
    return "# llmbasedos licence; any edit invalidates the signature\n" + body


def generate_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a new Ed25519 key pair."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
