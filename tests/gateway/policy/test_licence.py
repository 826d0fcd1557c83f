"""The licence: both forms, Ed25519 signatures, expiry, and the FREE fallback with its reason."""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llmbasedos.gateway.policy.licence import (
    LicenceError,
    evaluate,
    generate_keypair,
    issue,
    load_private_key,
    load_public_key,
    parse_licence,
)
from llmbasedos.gateway.policy.tiers import load_tiers

TIERS = load_tiers(None)
TODAY = dt.date(2026, 6, 15)


@pytest.fixture
def tmp() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp"))


@pytest.fixture
def keys(tmp: Path) -> tuple[Path, Path]:
    private, public = generate_keypair()
    (tmp / "priv.pem").write_bytes(private)
    (tmp / "pub.pem").write_bytes(public)
    return tmp / "priv.pem", tmp / "pub.pem"


def lic(tmp: Path, text: str) -> Path:
    path = tmp / "lic.key"
    path.write_text(text, encoding="utf-8")
    return path


def test_legacy_one_line_form(tmp: Path) -> None:
    status = evaluate(lic(tmp, "pro:alice:2026-12-31\n"), None, TIERS, TODAY)
    assert (status.valid, status.tier, status.user, status.expires) == (True, "PRO", "alice", dt.date(2026, 12, 31))
    parsed = parse_licence("ELITE:bob:with:colons:2030-01-01")
    assert (parsed.tier, parsed.user, parsed.legacy) == ("ELITE", "bob:with:colons", True)


def test_yaml_form_unsigned_is_valid_without_a_public_key(tmp: Path) -> None:
    status = evaluate(lic(tmp, "tier: ELITE\nuser: carol\nexpires: 2027-01-01\n"), None, TIERS, TODAY)
    assert status.valid and status.tier == "ELITE" and not status.signed and not status.signature_checked


def test_expiry_is_inclusive_and_falls_back_to_free(tmp: Path) -> None:
    path = lic(tmp, "PRO:alice:2026-06-15")
    assert evaluate(path, None, TIERS, TODAY).valid
    expired = evaluate(path, None, TIERS, TODAY + dt.timedelta(days=1))
    assert not expired.valid and expired.tier == "FREE" and expired.licence_tier == "PRO"
    assert expired.reason == "the licence expired on 2026-06-15"


def test_missing_file(tmp: Path) -> None:
    status = evaluate(tmp / "lic.key", None, TIERS, TODAY)
    assert (status.valid, status.tier, status.reason) == (False, "FREE", "no licence file")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("just words", "expected a YAML mapping"),
        ("tier: PRO\nuser: a\n", "missing field 'expires'"),
        ("tier: PRO\nuser: a\nexpires: someday\n", "'expires' must be a date"),
        ("tier: 'P R O'\nuser: a\nexpires: 2027-01-01\n", "field 'tier'"),
        ("tier: PRO\nuser: ''\nexpires: 2027-01-01\n", "field 'user'"),
        ("tier: PRO\nuser: a\nexpires: 2027-01-01\nsignature: '!!notbase64'\n", "not base64"),
        ("tier: [PRO\n", "not valid YAML at line"),
        ("PRO:alice:2026-13-40", "'expires' must be a date"),
    ],
)
def test_malformed_licences_fall_back_with_the_reason(tmp: Path, text: str, reason: str) -> None:
    status = evaluate(lic(tmp, text), None, TIERS, TODAY)
    assert not status.valid and status.tier == "FREE"
    assert status.reason is not None and status.reason.startswith("invalid licence") and reason in status.reason


def test_unknown_tier(tmp: Path) -> None:
    status = evaluate(lic(tmp, "GOLD:alice:2027-01-01"), None, TIERS, TODAY)
    assert not status.valid and status.reason == "unknown tier 'GOLD'"


def test_binary_file(tmp: Path) -> None:
    path = tmp / "lic.key"
    path.write_bytes(b"\xff\xfe\xfa")
    assert "not UTF-8" in (evaluate(path, None, TIERS, TODAY).reason or "")


def test_signed_licence_verifies(tmp: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    text = issue(load_private_key(private), "pro", "alice@example.org", dt.date(2027, 1, 31))
    status = evaluate(lic(tmp, text), str(public), TIERS, TODAY)
    assert status.valid and status.tier == "PRO" and status.signed and status.signature_checked
    assert status.user == "alice@example.org"


def test_signature_survives_reformatting_but_not_edits(tmp: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    text = issue(load_private_key(private), "PRO", "alice", dt.date(2027, 1, 31))
    # Field order, quoting and comments are not part of what is signed.
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    reordered = "\n".join(reversed(lines)).replace("'2027-01-31'", "2027-01-31") + "\n"
    assert evaluate(lic(tmp, reordered), str(public), TIERS, TODAY).valid
    for edit in (text.replace("PRO", "ELITE"), text.replace("alice", "mallory"),
                 text.replace("2027-01-31", "2099-01-31"), text.replace("user:", "note: x\nuser:")):
        status = evaluate(lic(tmp, edit), str(public), TIERS, TODAY)
        assert not status.valid and status.tier == "FREE"
        assert status.reason == "the licence signature does not match (wrong key or edited licence)"


def test_another_key_is_refused(tmp: Path, keys: tuple[Path, Path]) -> None:
    _private, public = keys
    other = Ed25519PrivateKey.generate()
    text = issue(other, "ELITE", "eve", dt.date(2027, 1, 31))
    status = evaluate(lic(tmp, text), str(public), TIERS, TODAY)
    assert not status.valid and "does not match" in (status.reason or "")


def test_unsigned_licences_are_refused_when_a_key_is_configured(tmp: Path, keys: tuple[Path, Path]) -> None:
    _private, public = keys
    for text in ("ELITE:eve:2099-01-01", "tier: ELITE\nuser: eve\nexpires: 2099-01-01\n"):
        status = evaluate(lic(tmp, text), str(public), TIERS, TODAY)
        assert not status.valid and status.tier == "FREE"
        assert status.reason == "the licence is not signed and a public key is configured"


def test_public_key_forms(tmp: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    pem = public.read_text()
    raw = load_public_key(pem).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    text = issue(load_private_key(private), "PRO", "alice", dt.date(2027, 1, 31))
    for source in (str(public), pem, base64.b64encode(raw).decode()):
        assert evaluate(lic(tmp, text), source, TIERS, TODAY).signature_checked


def test_unusable_public_key_invalidates(tmp: Path, keys: tuple[Path, Path]) -> None:
    private, _public = keys
    text = issue(load_private_key(private), "PRO", "alice", dt.date(2027, 1, 31))
    status = evaluate(lic(tmp, text), "not a key", TIERS, TODAY)
    assert not status.valid and (status.reason or "").startswith("cannot check the licence")
    with pytest.raises(LicenceError, match=r"not an Ed25519 key|not a valid PEM"):
        load_public_key(private.read_text())


def test_issue_rejects_bad_input(keys: tuple[Path, Path]) -> None:
    key = load_private_key(keys[0])
    with pytest.raises(LicenceError):
        issue(key, "P R O", "alice", dt.date(2027, 1, 1))
    with pytest.raises(LicenceError):
        issue(key, "PRO", "two\nlines", dt.date(2027, 1, 1))
    with pytest.raises(LicenceError, match="private key"):
        load_private_key(keys[1])
