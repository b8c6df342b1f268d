"""E-mail channel: SMTP out with S/MIME, IMAP in (DESIGN.md, Parts: adapters/).

An outgoing message, or a channel-override notice (gateway.notice), becomes
one mail, built in memory: its MIME content (adapters.email_mime), signed
with the gateway's S/MIME signature (signing.smime), encrypted as
``application/pkcs7-mime`` enveloped-data when the channel names a
certificate to encrypt to, under outer headers that are not signed::

    From, To, Subject, Date, Message-ID

The Message-ID is made from the message id (a notice's from the notice id),
so a resend after a crash is recognisable (and intake dedupes on the
envelope's message id anyway). The Subject names nothing but that id: it
travels unencrypted.

Polling reads the gateway's own mailbox over IMAP. Each mail is decrypted
when it is enveloped, its S/MIME signature verified through the trust
engine, and its signer's certificate mapped to an authority by ``sender_for``;
the envelope and the attachments are read from the signed content only, never
from the unsigned outer mail. Whatever is wrong with one mail comes back as an
``Incoming`` with ``problem`` set, so one bad mail never stops the poll. A
signed mail that carries a gateway's notice (``notice-<id>.xml``) and no
envelope is handed on as an ``Incoming`` of kind "notice".
``acknowledge`` moves a mail to the processed or rejected mailbox.

One adapter holds one IMAP connection, reopened after an error; SMTP
(adapters.email_smtp) connects per mail. It is not meant to be shared
between threads.
"""

from __future__ import annotations

import email.utils
import hashlib
import imaplib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from adapters.base import (
    Incoming,
    Outcome,
    Outgoing,
    OutgoingNotice,
    PermanentError,
    Receipt,
    TransientError,
)
from adapters.email_mime import (
    Unusable,
    header_value,
    message_entity,
    notice_document,
    notice_entity,
    outer_details,
    unpack,
)
from adapters.email_smtp import SmtpConfig, deliver, tls_context
from gateway.channels import EmailChannel
from signing.errors import SigningError
from signing.keys import Signer
from signing.smime import (
    SmimeError,
    SmimeKind,
    classify,
    decrypt_smime,
    encrypt_smime,
    sign_smime,
    verify_smime,
)
from signing.trust import TrustEngine, describe, load_certificates

__all__ = ["EmailAdapter", "ImapConfig", "SenderFor", "SmtpConfig"]

_ADDRESS = re.compile(r"[^\s<>()\[\],;:\\\"@]+@[^\s<>()\[\],;:\\\"@]+")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ImapConfig:
    """The gateway's own mailbox, polled for what counterparts send."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 993
    ssl: bool = True
    starttls: bool = False
    mailbox: str = "INBOX"
    processed_mailbox: str = "Processed"
    rejected_mailbox: str = "Rejected"
    timeout: float = 30.0
    ca_file: Path | None = None
    max_message_bytes: int = 32 * 1024 * 1024


SenderFor = Callable[[x509.Certificate], str | None]


def _nobody(cert: x509.Certificate) -> str | None:
    return None


class EmailAdapter:
    """Sends to one authority's address (``channel``, ``smtp``) and polls our mailbox (``imap``)."""

    def __init__(
        self,
        *,
        signer: Signer,
        engine: TrustEngine,
        channel: EmailChannel | None = None,
        smtp: SmtpConfig | None = None,
        imap: ImapConfig | None = None,
        sender_for: SenderFor = _nobody,
    ) -> None:
        self.signer = signer  # signs what we send; decrypts what is encrypted to us (RSA only)
        self.engine = engine
        self.channel = channel
        self.smtp = smtp
        self.imap = imap
        self.sender_for = sender_for
        self._imap: imaplib.IMAP4 | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._uidvalidity = ""  # of the selected mailbox: a UID means nothing without it
        self._mailboxes: set[str] = set()  # target mailboxes known to exist

    # -- sending ---------------------------------------------------------------

    def send(self, outgoing: Outgoing) -> Receipt:
        smtp, _ = self._destination()
        if not _MESSAGE_ID.fullmatch(outgoing.message_id):
            raise PermanentError(f"message id {outgoing.message_id!r} cannot name an e-mail")
        mixed = message_entity(outgoing, smtp.max_message_bytes)
        return self._mail(mixed, outgoing.message_id, f"Rogatory message {outgoing.message_id}")

    def send_notice(self, notice: OutgoingNotice) -> Receipt:
        """A signed mail: the notice in words, and its signed XML attached."""
        self._destination()
        for value in (notice.notice_id, notice.in_reply_to):
            if not _MESSAGE_ID.fullmatch(value):
                raise PermanentError(f"{value!r} cannot name an e-mail")
        mixed = notice_entity(notice)
        subject = f"Rogatory notice about message {notice.in_reply_to}"
        return self._mail(mixed, f"notice-{notice.notice_id}", subject)

    def _destination(self) -> tuple[SmtpConfig, EmailChannel]:
        if self.smtp is None or self.channel is None:
            raise PermanentError("this e-mail adapter has no SMTP server or address to send to")
        for address in (self.smtp.from_address, self.channel.address):
            if not _ADDRESS.fullmatch(address):
                raise PermanentError(
                    f"{address!r} is not an e-mail address this adapter sends with"
                )
        return self.smtp, self.channel

    def _mail(self, mixed: bytes, local_id: str, subject: str) -> Receipt:
        """Sign ``mixed`` (and encrypt it when the channel names a certificate), then send it."""
        smtp, channel = self._destination()
        try:
            mail = sign_smime(mixed, self.signer)
            if channel.smime_certificate is not None:
                mail = encrypt_smime(mail, [self._recipient_certificate(channel.smime_certificate)])
        except SigningError as exc:
            raise PermanentError(f"the mail could not be signed or encrypted: {exc}") from None
        # Made from the id, so a resend after a crash is recognisable.
        message_id = f"<{local_id}@{smtp.from_address.rsplit('@', 1)[1]}>"
        headers = (
            f"From: {smtp.from_address}\r\n"
            f"To: {channel.address}\r\n"
            f"Subject: {subject}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Message-ID: {message_id}\r\n"
        )
        deliver(smtp, channel.address, headers.encode("ascii") + mail)
        return Receipt(reference=message_id)

    def _recipient_certificate(self, path: Path) -> x509.Certificate:
        try:
            return load_certificates(path.read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            raise PermanentError(f"cannot read the S/MIME certificate {path}: {exc}") from None

    # -- polling ---------------------------------------------------------------

    def fetch(self, limit: int = 100) -> Iterator[Incoming]:
        config = self._imap_config()
        with self._imap_errors():
            connection = self._connection()
            typ, data = connection.uid("SEARCH", "UNDELETED")
            _require_ok(typ, data, f"searching {config.mailbox}")
            uids = sorted(int(uid) for uid in (data[0] or b"").split())[:limit]
        for uid in uids:
            reference = f"{self._uidvalidity}:{uid}"
            with self._imap_errors():
                size = self._size(connection, uid)
                raw = self._body(connection, uid, size, config.max_message_bytes)
            if raw is None:
                yield _problem(
                    reference,
                    f"the mail of {size} bytes is larger than the limit of "
                    f"{config.max_message_bytes} bytes",
                    {"size": str(size)},
                )
            else:
                yield self._open(reference, raw)

    def acknowledge(self, incoming: Incoming, outcome: Outcome) -> None:
        config = self._imap_config()
        target = config.processed_mailbox if outcome == "accepted" else config.rejected_mailbox
        uidvalidity, _, uid = incoming.reference.partition(":")
        with self._imap_errors():
            connection = self._connection()
            if self._uidvalidity != uidvalidity:
                raise TransientError(
                    f"the mailbox {config.mailbox} was renumbered since the mail was fetched "
                    "(UIDVALIDITY changed); it stays there and will be fetched again"
                )
            self._ensure_mailbox(connection, target)
            if "MOVE" in self._capabilities:
                typ, data = connection.uid("MOVE", uid, _quoted(target))
                _require_ok(typ, data, f"moving mail {uid} to {target}")
                return
            typ, data = connection.uid("COPY", uid, _quoted(target))
            _require_ok(typ, data, f"copying mail {uid} to {target}")
            typ, data = connection.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
            _require_ok(typ, data, f"deleting mail {uid} from {config.mailbox}")
            if "UIDPLUS" in self._capabilities:
                typ, data = connection.uid("EXPUNGE", uid)
            else:
                typ, data = connection.expunge()
            _require_ok(typ, data, f"expunging mail {uid}")

    def close(self) -> None:
        connection, self._imap = self._imap, None
        if connection is not None:
            with suppress(imaplib.IMAP4.error, OSError):
                connection.logout()

    def _open(self, reference: str, raw: bytes) -> Incoming:
        """Decrypt, verify and unpack one mail; every failure is a problem, never an exception."""
        details = {
            "size": str(len(raw)),
            "sha256": hashlib.sha256(raw).hexdigest(),  # the mail as it arrived, kept aside
            "encrypted": "no",
        }
        try:
            details.update(outer_details(raw))
            if classify(raw) is SmimeKind.ENVELOPED:
                details["encrypted"] = "yes"
                try:
                    raw = decrypt_smime(raw, self.signer.key, self.signer.cert)
                except SmimeError as exc:
                    return _problem(reference, str(exc), details)
            verified = verify_smime(raw, self.engine)
            details["verdict"] = verified.verdict.indication.value
            if verified.signer is not None:
                details["signer"] = header_value(describe(verified.signer), 500)
            if not verified.ok or verified.content is None or verified.signer is None:
                sub = verified.verdict.subindication
                return _problem(
                    reference,
                    f"the S/MIME signature is not acceptable ({verified.verdict.indication}"
                    f"{'/' + sub if sub else ''}): {verified.verdict.reason}",
                    details,
                )
            sender = self.sender_for(verified.signer)
            if sender is None:
                return _problem(
                    reference,
                    f"the mail is signed by {describe(verified.signer)}, which is not the "
                    "S/MIME certificate of any authority we know",
                    details,
                )
            notice = notice_document(verified.content)
            if notice is not None:
                return Incoming(
                    reference, notice, channel_sender=sender, details=details, kind="notice"
                )
            envelope, attachments = unpack(verified.content)
        except Unusable as exc:
            return _problem(reference, str(exc), details)
        except Exception as exc:  # fail closed: a surprise rejects this mail, not the poll
            return _problem(reference, f"the mail could not be read ({exc})", details)
        return Incoming(reference, envelope, attachments, channel_sender=sender, details=details)

    def _imap_config(self) -> ImapConfig:
        if self.imap is None:
            raise PermanentError("this e-mail adapter has no IMAP mailbox to poll")
        return self.imap

    @contextmanager
    def _imap_errors(self) -> Iterator[None]:
        """IMAP and socket failures become TransientError; the broken connection is dropped."""
        try:
            yield
        except (imaplib.IMAP4.error, OSError) as exc:
            self._imap = None
            config = self._imap_config()
            raise TransientError(f"IMAP server {config.host}:{config.port}: {exc}") from None

    def _connection(self) -> imaplib.IMAP4:
        if self._imap is not None:
            return self._imap
        config = self._imap_config()
        if config.ssl:
            connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                config.host,
                config.port,
                ssl_context=tls_context(config.ca_file),
                timeout=config.timeout,
            )
        else:
            connection = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
            if config.starttls:
                connection.starttls(tls_context(config.ca_file))
        try:
            connection.login(config.user, config.password)
        except imaplib.IMAP4.error as exc:
            connection.shutdown()
            raise PermanentError(
                f"IMAP server {config.host}:{config.port} refused the login of {config.user}: {exc}"
            ) from None
        typ, data = connection.capability()
        self._capabilities = frozenset(_text(data).upper().split()) if typ == "OK" else frozenset()
        typ, data = connection.select(_quoted(config.mailbox))
        if typ != "OK":
            connection.logout()
            raise PermanentError(f"the mailbox {config.mailbox} cannot be opened: {_text(data)}")
        _, data = connection.response("UIDVALIDITY")
        if not data or data[0] is None:
            connection.logout()
            raise TransientError(
                f"the IMAP server did not tell the UIDVALIDITY of {config.mailbox}"
            )
        self._uidvalidity = _text(data[0])
        self._imap = connection
        return connection

    def _size(self, connection: imaplib.IMAP4, uid: int) -> int:
        typ, data = connection.uid("FETCH", str(uid), "(RFC822.SIZE)")
        for item in data if typ == "OK" else []:
            found = re.search(rb"RFC822\.SIZE (\d+)", item if isinstance(item, bytes) else item[0])
            if found:
                return int(found.group(1))
        raise TransientError(f"the IMAP server did not tell the size of mail {uid}")

    def _body(self, connection: imaplib.IMAP4, uid: int, size: int, limit: int) -> bytes | None:
        """The whole mail, never more than ``limit`` bytes of it (None when it is longer)."""
        if size > limit:
            return None
        typ, data = connection.uid("FETCH", str(uid), f"(BODY.PEEK[]<0.{limit + 1}>)")
        for item in data if typ == "OK" else []:
            if isinstance(item, tuple) and b"BODY[]" in item[0]:
                return item[1] if len(item[1]) <= limit else None
        raise TransientError(f"the IMAP server did not return mail {uid}: {_text(data)}")

    def _ensure_mailbox(self, connection: imaplib.IMAP4, name: str) -> None:
        if name in self._mailboxes:
            return
        typ, data = connection.create(_quoted(name))
        if typ != "OK" and "ALREADYEXISTS" not in _text(data).upper():
            typ, listed = connection.list('""', _quoted(name))
            if typ != "OK" or not [item for item in listed if item]:
                raise TransientError(f"the mailbox {name} cannot be created: {_text(data)}")
        self._mailboxes.add(name)


def _quoted(mailbox: str) -> str:
    if not mailbox.isascii() or not mailbox.isprintable():
        raise PermanentError(f"mailbox name {mailbox!r} must be printable ASCII")
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    if isinstance(data, list):
        return " ".join(_text(item) for item in data if item is not None)
    if isinstance(data, tuple):
        return _text(list(data))
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _require_ok(typ: str, data: object, what: str) -> None:
    if typ != "OK":
        raise TransientError(f"IMAP: {what} failed: {_text(data)}")


def _problem(reference: str, problem: str, details: dict[str, str]) -> Incoming:
    return Incoming(reference, b"", problem=problem, details=details)
