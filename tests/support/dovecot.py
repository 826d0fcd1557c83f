"""A real dovecot IMAP server for tests, run from a temporary directory on free loopback ports.

    with dovecot_server({"alice": "s3cret"}) as dv:
        uid = dv.append("alice", raw_message_bytes)            # seeds through IMAP APPEND
        dv.host, dv.port                                       # plain IMAP (STARTTLS offered)
        dv.tls_port, dv.ca_file                                # implicit TLS, and the certificate to trust
        dv.account("alice", password_env="ALICE_PW")           # an entry for mail_accounts.yaml
        dv.restart()                                           # same ports, clients get disconnected
        dv.flags("alice", uid)                                 # read with EXAMINE: looking changes nothing

`sample_messages()` gives real-world shaped messages to seed (plain, multipart/alternative, attachments,
RFC 2047 headers, a calendar invitation with an .ics part).

Needs Debian's `dovecot-imapd` (which pulls in `dovecot-core`); nothing is installed or changed outside the
temporary directory. Works as root (mail processes then run as `nobody`) and as an ordinary user (everything
runs as that user). Users and passwords live in a passwd-file; XOAUTH2 / OAUTHBEARER logins are accepted
with the user's password as the token, so OAuth2 code paths can be tested too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from imapclient import IMAPClient

__all__ = ["Dovecot", "dovecot_server", "dovecot_available", "free_port", "self_signed_cert", "sample_messages",
           "INVITE_ICS", "PDF_BYTES"]

_START_TIMEOUT = 30.0


def dovecot_available() -> bool:
    return _dovecot_binary() is not None


def _dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot",) if os.access(p, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for `host` (and localhost), its own CA; returns (cert_path, key_path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmbasedos test")])
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class Dovecot:
    """One dovecot instance. Use `dovecot_server()`, which starts it and cleans up."""

    host = "127.0.0.1"

    def __init__(self, users: Mapping[str, str]) -> None:
        binary = _dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed (Debian package dovecot-imapd)")
        self._binary = binary
        self.users = dict(users)
        # Short path: dovecot's UNIX sockets live under base_dir and AF_UNIX paths are limited to 107 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="dv-", dir="/tmp"))
        self.directory.chmod(0o755)  # the unprivileged mail processes must reach the mail store
        self.ca_file, self._key_file = self_signed_cert(self.directory, self.host)
        self.port = 0
        self.tls_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_passwd()

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.directory / "dovecot.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start on the ports chosen before (a restart), or on fresh free ports."""
        keep_ports = self.port != 0
        for _ in range(5):
            if not keep_ports:
                self.port, self.tls_port = free_port(self.host), free_port(self.host)
            self._write_config()
            self._proc = subprocess.Popen([self._binary, "-F", "-c", str(self.directory / "dovecot.conf")],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=(self.directory / "stderr.log").open("ab"),
                                          start_new_session=True)
            if self._wait_ready():
                return
            self._kill()
            if keep_ports or "in use" not in self.log() + self._stderr():
                break
        raise RuntimeError(f"dovecot did not start:\n{self.log()}\n{self._stderr()}")

    def stop(self) -> None:
        """Stop the server; connected clients are disconnected (it says BYE first)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)  # the master and its sessions together
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        # The master leaves some children (log, stats, running imap sessions) behind when it stops; they all
        # share the process group it was started in, so end that group.
        self._end_group(self._proc.pid)
        self._proc = None
        self._wait_port_closed()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- users and messages --------------------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        """Add (or change) a user; dovecot reads the passwd-file at each login."""
        self.users[user] = password
        self._write_passwd()

    def client(self, user: str) -> IMAPClient:
        """A logged-in IMAP client on the plain port (the caller logs out)."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=15)
        client.login(user, self.users[user])
        return client

    def create_folder(self, user: str, folder: str) -> None:
        with contextlib.closing(_Session(self, user)) as s:
            if not s.client.folder_exists(folder):
                s.client.create_folder(folder)

    def append(self, user: str, message: bytes | EmailMessage, folder: str = "INBOX",
               flags: Iterable[str] = (), msg_time: dt.datetime | None = None) -> int:
        """Store a message with IMAP APPEND (creating the folder if needed); returns its UID."""
        raw = message.as_bytes() if isinstance(message, EmailMessage) else message
        with contextlib.closing(_Session(self, user)) as s:
            if not s.client.folder_exists(folder):
                s.client.create_folder(folder)
            answer = s.client.append(folder, raw, flags=tuple(flags), msg_time=msg_time)
        # Dovecot has UIDPLUS: "[APPENDUID <validity> <uid>] ..."
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        marker = "APPENDUID "
        if marker not in text:
            raise RuntimeError(f"APPEND gave no UID: {text}")
        return int(text.split(marker, 1)[1].split()[1].rstrip("]"))

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> tuple[str, ...]:
        """The message's flags, read with EXAMINE so that looking changes nothing."""
        with contextlib.closing(_Session(self, user)) as s:
            s.client.select_folder(folder, readonly=True)
            data = s.client.fetch([uid], ["FLAGS"])
        if uid not in data:
            raise KeyError(f"no UID {uid} in {folder}")
        return tuple(f.decode() if isinstance(f, bytes) else str(f) for f in data[uid][b"FLAGS"])

    def account(self, user: str, *, password_env: str | None = None, password_file: str | None = None,
                security: str = "none", **extra: Any) -> dict[str, Any]:
        """A `mail_accounts.yaml` entry for `user` of this server (tls uses tls_port and trusts ca_file)."""
        entry: dict[str, Any] = {"host": self.host, "user": user, "security": security}
        entry["port"] = self.tls_port if security == "tls" else self.port
        if security != "none":
            entry["ca_file"] = str(self.ca_file)
        if password_env:
            entry["password_env"] = password_env
        if password_file:
            entry["password_file"] = password_file
        entry.update(extra)
        return entry

    # -- internals -----------------------------------------------------------------------------------

    def _stderr(self) -> str:
        try:
            return (self.directory / "stderr.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._end_group(self._proc.pid)
        self._proc = None

    @staticmethod
    def _end_group(pgid: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.02)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def _write_passwd(self) -> None:
        lines = [f"{user}:{{PLAIN}}{password}::::::nodelay\n" for user, password in self.users.items()]
        path = self.directory / "passwd"
        tmp = self.directory / "passwd.tmp"
        tmp.write_text("".join(lines))
        tmp.chmod(0o600)
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")  # the auth process runs as nobody and reads this file
            os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        tmp.replace(path)

    def _write_config(self) -> None:
        d = self.directory
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        uid = os.getuid()
        if uid == 0:
            # Dovecot refuses to run mail processes as root: they run as nobody, who owns the mail store.
            account = pwd.getpwnam("nobody")
            mail_uid, mail_gid = account.pw_uid, account.pw_gid
            internal_user = "nobody"
            os.chown(d / "mail", mail_uid, mail_gid)
        else:
            mail_uid, mail_gid = uid, os.getgid()
            internal_user = pwd.getpwuid(uid).pw_name
        internal_group = grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name
        config = f"""
base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log_path}
protocols = imap
listen = {self.host}
shutdown_clients = yes
ssl = yes
ssl_cert = <{self.ca_file}
ssl_key = <{self._key_file}
disable_plaintext_auth = no
# Tests fail logins on purpose: no delay after a failure, no growing penalty per client address (below).
auth_failure_delay = 0
auth_mechanisms = plain login xoauth2 oauthbearer
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {internal_user}
first_valid_uid = {min(mail_uid, 500)}
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={d}/mail/%u
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
    ssl = yes
  }}
}}
"""
        (d / "dovecot.conf").write_text(config)


class _Session:
    def __init__(self, server: Dovecot, user: str) -> None:
        self.client = server.client(user)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()


@contextlib.contextmanager
def dovecot_server(users: Mapping[str, str] | None = None) -> Iterator[Dovecot]:
    """Start dovecot with `users` (name -> password; default one user 'alice') and stop it afterwards."""
    server = Dovecot(users if users is not None else {"alice": "alice-password"})
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


INVITE_ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//llmbasedos tests//EN
METHOD:REQUEST
BEGIN:VEVENT
UID:weekly-sync-42@example.org
SUMMARY:Réunion hebdomadaire
DTSTART;TZID=Europe/Paris:20250110T100000
DTEND;TZID=Europe/Paris:20250110T110000
RRULE:FREQ=WEEKLY;BYDAY=FR;COUNT=10
LOCATION:Salle Lovelace
ORGANIZER;CN=Alice Martin:mailto:alice@example.org
ATTENDEE;CN=Bob Stone;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.org
ATTENDEE;CN=Zoë Ünïcode;ROLE=OPT-PARTICIPANT:mailto:zoe@example.org
DESCRIPTION:Ordre du jour:\\n1. chiffres\\n2. questions
END:VEVENT
END:VCALENDAR
"""

PDF_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def sample_messages() -> dict[str, EmailMessage]:
    """Real-world shaped messages: plain, multipart/alternative, attachments, RFC 2047 headers, an invitation."""
    out: dict[str, EmailMessage] = {}

    m = EmailMessage()
    m["From"] = "Bob Stone <bob@example.org>"
    m["To"] = "alice@example.org"
    m["Subject"] = "Plain hello"
    m["Date"] = "Mon, 06 Jan 2025 09:00:00 +0000"
    m["Message-ID"] = "<plain-1@example.org>"
    m.set_content("Hello Alice,\nthis is plain text.\n")
    out["plain"] = m

    m = EmailMessage()
    m["From"] = "Newsletter <news@example.org>"
    m["To"] = "Alice Martin <alice@example.org>, carol@example.org"
    m["Subject"] = "Both kinds of body"
    m["Date"] = "Tue, 07 Jan 2025 10:30:00 +0100"
    m["Message-ID"] = "<alt-1@example.org>"
    m.set_content("The plain version.\n")
    m.add_alternative("<html><body><p>The <b>HTML</b> version.</p></body></html>\n", subtype="html")
    out["alternative"] = m

    m = EmailMessage()
    m["From"] = "Carol <carol@example.org>"
    m["To"] = "alice@example.org"
    m["Subject"] = "Quarterly report"
    m["Date"] = "Wed, 08 Jan 2025 11:00:00 +0000"
    m["Message-ID"] = "<att-1@example.org>"
    m.set_content("See the report attached.\n")
    m.add_attachment(PDF_BYTES, maintype="application", subtype="pdf", filename="report.pdf")
    m.add_attachment("Zahl;Wert\nÄpfel;3\n".encode(), maintype="text", subtype="csv",
                     filename="données été.csv")
    out["attachments"] = m

    m = EmailMessage()
    m["From"] = "Zoë Ünïcode <zoe@example.org>"
    m["To"] = "Ålice Märtin <alice@example.org>"
    m["Subject"] = "Réunion à 10h — 会議の件"
    m["Date"] = "Thu, 09 Jan 2025 08:15:00 +0000"
    m["Message-ID"] = "<unicode-1@example.org>"
    m.set_content("Grüße aus Köln — 你好\n")
    out["unicode"] = m

    m = EmailMessage()
    m["From"] = "Alice Martin <alice@example.org>"
    m["To"] = "bob@example.org"
    m["Subject"] = "Invitation: Réunion hebdomadaire"
    m["Date"] = "Fri, 10 Jan 2025 07:00:00 +0000"
    m["Message-ID"] = "<invite-1@example.org>"
    m.set_content("You are invited.\n")
    m.add_alternative(INVITE_ICS, subtype="calendar", params={"method": "REQUEST"})
    m.add_attachment(INVITE_ICS.encode(), maintype="application", subtype="ics", filename="invite.ics")
    out["invite"] = m
    return out
