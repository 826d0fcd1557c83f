"""The one loopback rule: the names and addresses that stay on this machine, and the look-alikes that do not."""

from __future__ import annotations

import pytest

from llmbasedos.loopback import is_loopback, is_loopback_url


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST", True), ("app.localhost", True), ("localhost.localdomain", True),
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("192.168.1.5", False), ("example.org", False),
    ("imap.example.org", False), ("localhost.example.org", False), ("127.0.0.1.example.org", False),
    ("", False), (None, False),
])
def test_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8081/v1", True), ("http://[::1]:9/x", True), ("http://localhost/", True),
    ("https://api.example.org/v1", False), ("http://127.0.0.1.example.org/", False), ("http://[::1/", False),
])
def test_urls(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback
