"""Real mail servers on 127.0.0.1 for the e-mail channel tests, and S/MIME identities.

``dovecot()`` runs Debian's dovecot from a throwaway configuration: IMAP and
LMTP listeners on free loopback ports, passwd-file users with a plaintext
password, maildirs, state and logs in one temporary folder. ``smtp_relay()``
runs an aiosmtpd server in a thread that hands every accepted mail to
dovecot over LMTP, or answers with the reply a test sets (a 4xx or 5xx).
Both are context managers; leaving the block stops the server.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.pki import SIGNERS_CA, DevPKI
from gateway.pki_issue import Profile, name
from signing.keys import Signer
from tests.gateway_process import free_port

DOVECOT = Path("/usr/sbin/dovecot")
PASSWORD = "test-password"
HOST = "127.0.0.1"


def issue_smime(
    pki: DevPKI, cert_name: str, address: str, *, eku: str = "emailProtection"
) -> Signer:
    """An RSA S/MIME certificate from the signers CA: RSA, so mail can be encrypted to it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki.issue(
        cert_name,
        subject=name(cn=address, o="Rogatory Development", c="ES"),
        profile=Profile(
            key_usage=frozenset({"digitalSignature", "keyEncipherment"}),
            eku=("emailProtection",),
            email_addresses=(address,),
        ),
        issuer=SIGNERS_CA,
        key=key,
    )
    return pki.signer(cert_name)


@dataclass
class Dovecot:
    imap_port: int
    lmtp_port: int
    users: tuple[str, ...]
    root: Path
    log: Path
    password: str = PASSWORD

    def imap(self, user: str) -> imaplib.IMAP4:
        connection = imaplib.IMAP4(HOST, self.imap_port, timeout=10)
        connection.login(user, self.password)
        return connection

    def deliver(self, user: str, mail: bytes) -> None:
        """Put ``mail`` into ``user``'s inbox as a mail server would (LMTP)."""
        with smtplib.LMTP(HOST, self.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail("sender@test.example", [user], mail)

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """Every mail in ``mailbox``, as IMAP returns it; [] when the mailbox does not exist."""
        connection = self.imap(user)
        try:
            typ, _ = connection.select(f'"{mailbox}"', readonly=True)
            if typ != "OK":
                return []
            _, data = connection.uid("SEARCH", "ALL")
            out: list[bytes] = []
            for uid in (data[0] or b"").split():
                _, fetched = connection.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                out.extend(item[1] for item in fetched if isinstance(item, tuple))
            return out
        finally:
            connection.logout()

    def reset(self, user: str) -> None:
        """An empty inbox and no other mailbox, for the next test."""
        connection = self.imap(user)
        try:
            _, listed = connection.list()
            for line in listed:
                mailbox = line.decode().rsplit(' "." ', 1)[1] if isinstance(line, bytes) else ""
                if mailbox and mailbox != "INBOX":
                    connection.delete(mailbox)
            _, count = connection.select("INBOX")
            if count[0] != b"0":
                connection.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                connection.expunge()
        finally:
            connection.logout()


def _accounts() -> tuple[str, str]:
    """The user that owns the maildirs, and the settings that run dovecot as whoever we are."""
    if os.geteuid() == 0:  # dovecot drops privileges: mail as nobody, logins as dovenull
        return "nobody", "default_login_user = dovenull\n"
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid).gr_name
    return me.pw_name, (  # one unprivileged user for everything, and no chroot
        f"default_login_user = {me.pw_name}\ndefault_internal_user = {me.pw_name}\n"
        f"default_internal_group = {group}\n"
        "service anvil {\n  chroot =\n}\nservice imap-login {\n  chroot =\n}\n"
    )


def _config(root: Path, imap_port: int, lmtp_port: int) -> str:
    mail_user, accounts = _accounts()
    return f"""\
protocols = imap lmtp
listen = {HOST}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_username_format = %Ln
{accounts}mail_uid = {mail_user}
mail_gid = {pwd.getpwnam(mail_user).pw_gid}
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {lmtp_port}
  }}
}}
"""


@contextmanager
def dovecot(users: tuple[str, ...] = ("es", "ar")) -> Iterator[Dovecot]:
    """A running dovecot whose users log in with ``PASSWORD``; addresses map to local parts."""
    version = subprocess.run(
        [str(DOVECOT), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not version.startswith("2.3."):
        # 2.4 renamed most settings (mail_driver, passdb blocks, auth_allow_cleartext...).
        raise RuntimeError(f"this fixture writes a dovecot 2.3 configuration, not {version}")
    # Not under pytest's tmp_path: its parents are 0700 root, which dovecot's users cannot cross.
    root = Path(tempfile.mkdtemp(prefix="rogatory-dovecot-"))
    try:
        root.chmod(0o755)
        mail = root / "mail"
        mail.mkdir()
        shutil.chown(mail, _accounts()[0])
        (root / "passwd").write_text(
            "".join(f"{user}:{{PLAIN}}{PASSWORD}::::{mail}/{user}::\n" for user in users)
        )
        imap_port, lmtp_port = free_port(), free_port()
        config = root / "dovecot.conf"
        config.write_text(_config(root, imap_port, lmtp_port))
        server = Dovecot(imap_port, lmtp_port, users, root, root / "dovecot.log")
        process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for(process, [imap_port, lmtp_port], server.log)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(process: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    deadline = time.monotonic() + 15
    waiting = list(ports)
    while waiting:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"dovecot exited with {process.returncode}: {stderr}{text}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot did not listen on {waiting} within 15 s")
        try:
            with socket.create_connection((HOST, waiting[0]), timeout=1):
                waiting.pop(0)
        except OSError:
            time.sleep(0.05)


@dataclass
class SmtpRelay:
    """What the relay does with the next mails; ``received`` holds what it accepted."""

    port: int
    rcpt_reply: str | None = None  # e.g. "550 5.1.1 no such user": refuse every recipient
    data_reply: str | None = None  # e.g. "451 4.3.0 try later": refuse after DATA
    deliver: bool = True  # hand accepted mail to dovecot; False keeps it in ``received`` only
    received: list[bytes] = field(default_factory=list)


class _Handler:
    def __init__(self, relay: SmtpRelay, lmtp_port: int) -> None:
        self.relay = relay
        self.lmtp_port = lmtp_port

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.relay.rcpt_reply:
            return self.relay.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.relay.data_reply:
            return self.relay.data_reply
        mail: bytes = envelope.original_content
        if self.relay.deliver:
            try:
                with smtplib.LMTP(HOST, self.lmtp_port, timeout=10) as lmtp:
                    lmtp.sendmail(envelope.mail_from, envelope.rcpt_tos, mail)
            except (smtplib.SMTPException, OSError) as exc:
                return f"451 4.3.0 LMTP delivery failed: {exc}"
        self.relay.received.append(mail)
        return "250 2.0.0 Delivered"


@contextmanager
def smtp_relay(server: Dovecot) -> Iterator[SmtpRelay]:
    """An SMTP server on 127.0.0.1 that delivers into ``server`` (see ``SmtpRelay``)."""
    from aiosmtpd.controller import Controller  # a test extra: only the mail tests need it

    relay = SmtpRelay(free_port())
    controller = Controller(_Handler(relay, server.lmtp_port), hostname=HOST, port=relay.port)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
