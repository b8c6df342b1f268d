"""The e-mail channel against real servers on 127.0.0.1: aiosmtpd relaying into dovecot.

The counterpart (AR, no gateway) and our gateway (ES) each hold an RSA S/MIME
certificate. Mail goes AR -> SMTP relay -> dovecot (LMTP) and is polled from
dovecot over IMAP, as in production.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from adapters.base import Outgoing, OutgoingPart, PermanentError, TransientError
from adapters.email import EmailAdapter, ImapConfig, SmtpConfig
from gateway.channels import EmailChannel
from gateway.notice import read_notice
from gateway.pki import DevPKI, create_dev_pki
from signing.keys import Signer
from signing.smime import sign_smime
from signing.trust import TrustEngine, TrustPolicy
from tests.mailservers import (
    DOVECOT,
    PASSWORD,
    Dovecot,
    SmtpRelay,
    dovecot,
    free_port,
    issue_smime,
    smtp_relay,
)
from tests.test_notice import NOTICE_ABOUT, notice_for

pytestmark = pytest.mark.skipif(
    not DOVECOT.exists(), reason=f"{DOVECOT} is not installed (Debian: dovecot-imapd, -lmtpd)"
)

MESSAGE_ID = "4b0e6a52-7d3c-4c39-9a51-0c0ffee00001"
GATEWAY = "es@es.example"  # the mailbox our gateway polls
COUNTERPART = "mla@ar.example"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 300 + b"\r\n%%EOF\n"
NOTES = b"line one\r\nline two\nline three\rno newline at the end"


@pytest.fixture(scope="module")
def mail_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    return create_dev_pki(tmp_path_factory.mktemp("mail-pki"))


@pytest.fixture(scope="module")
def mail_engine(mail_pki: DevPKI) -> TrustEngine:
    return TrustEngine(TrustPolicy(anchors=(mail_pki.root(),), allow_fetching=False))


@pytest.fixture(scope="module")
def es_smime(mail_pki: DevPKI) -> Signer:
    return issue_smime(mail_pki, "gw-es-smime", GATEWAY)


@pytest.fixture(scope="module")
def ar_smime(mail_pki: DevPKI) -> Signer:
    return issue_smime(mail_pki, "ar-smime", COUNTERPART)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Dovecot, SmtpRelay]]:
    with dovecot(users=("es", "mla")) as imap_server, smtp_relay(imap_server) as relay:
        yield imap_server, relay


@pytest.fixture()
def mailbox(servers: tuple[Dovecot, SmtpRelay]) -> Dovecot:
    """Dovecot with empty mailboxes, and a relay that delivers everything again."""
    imap_server, relay = servers
    for user in imap_server.users:
        imap_server.reset(user)
    relay.rcpt_reply = relay.data_reply = None
    relay.deliver = True
    relay.received.clear()
    return imap_server


@pytest.fixture()
def relay(servers: tuple[Dovecot, SmtpRelay], mailbox: Dovecot) -> SmtpRelay:
    return servers[1]


def attachment(content_id: str, media_type: str, file_name: str, data: bytes) -> OutgoingPart:
    return OutgoingPart(
        content_id, media_type, file_name, len(data), hashlib.sha256(data).hexdigest(),
        lambda: io.BytesIO(data),
    )  # fmt: skip


@pytest.fixture()
def outgoing(signed_envelope: bytes) -> Outgoing:
    return Outgoing(
        MESSAGE_ID,
        signed_envelope,
        (
            attachment("request-1.pdf", "application/pdf", "Solicitud de asistencia.pdf", PDF),
            attachment("notes", "text/plain", "notas «urgentes».txt", NOTES),
        ),
        sender_id="AR-MJ",
        recipient_id="ES-MJ",
    )


def counterpart(
    signer: Signer,
    engine: TrustEngine,
    relay: SmtpRelay,
    certificate: Path | None,
    max_message_bytes: int = 20 * 1024 * 1024,
) -> EmailAdapter:
    """The AR side, sending to our gateway's address."""
    return EmailAdapter(
        signer=signer,
        engine=engine,
        channel=EmailChannel(GATEWAY, smime_certificate=certificate),
        smtp=SmtpConfig(
            "127.0.0.1",
            COUNTERPART,
            port=relay.port,
            timeout=10,
            max_message_bytes=max_message_bytes,
        ),
    )


@pytest.fixture()
def inbox(
    mailbox: Dovecot, es_smime: Signer, ar_smime: Signer, mail_engine: TrustEngine
) -> Iterator[EmailAdapter]:
    """Our gateway's side: polls es@, knows AR-MJ by its S/MIME certificate."""
    known = {ar_smime.cert: "AR-MJ"}
    adapter = EmailAdapter(
        signer=es_smime,
        engine=mail_engine,
        imap=ImapConfig("127.0.0.1", "es", PASSWORD, port=mailbox.imap_port, ssl=False),
        sender_for=known.get,
    )
    yield adapter
    adapter.close()


def openssl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)


def test_round_trip_arrives_encrypted_verified_and_byte_identical(
    outgoing: Outgoing,
    relay: SmtpRelay,
    mailbox: Dovecot,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
) -> None:
    sender = counterpart(ar_smime, mail_engine, relay, mail_pki.cert_path("gw-es-smime"))

    receipt = sender.send(outgoing)

    [stored] = mailbox.messages("es")
    assert receipt.reference == f"<{MESSAGE_ID}@ar.example>"
    assert f"Message-ID: {receipt.reference}".encode() in stored
    assert b"application/pkcs7-mime; smime-type=enveloped-data" in stored
    assert b"Solicitud" not in stored and b"envelope.xml" not in stored  # nothing in clear
    [incoming] = list(inbox.fetch())
    assert incoming.problem is None
    assert incoming.channel_sender == "AR-MJ"
    assert incoming.envelope == outgoing.envelope
    assert [(p.content_id, p.media_type, p.data) for p in incoming.attachments] == [
        ("request-1.pdf", "application/pdf", PDF),
        ("notes", "text/plain", NOTES),
    ]
    assert incoming.details["encrypted"] == "yes"
    assert incoming.details["message-id"] == receipt.reference


def test_encrypted_mail_opens_and_verifies_with_openssl(
    outgoing: Outgoing,
    relay: SmtpRelay,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
) -> None:
    counterpart(ar_smime, mail_engine, relay, mail_pki.cert_path("gw-es-smime")).send(outgoing)

    opened = openssl(
        "cms", "-decrypt", "-recip", str(mail_pki.cert_path("gw-es-smime")),
        "-inkey", str(mail_pki.key_path("gw-es-smime")), stdin=relay.received[0],
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    checked = openssl("cms", "-verify", "-CAfile", str(mail_pki.root_path), stdin=opened.stdout)
    assert checked.returncode == 0, checked.stderr
    assert b"Content-Type: multipart/mixed" in checked.stdout


def test_without_a_recipient_certificate_the_mail_is_signed_only(
    outgoing: Outgoing,
    relay: SmtpRelay,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
) -> None:
    counterpart(ar_smime, mail_engine, relay, None).send(outgoing)

    mail = relay.received[0]
    assert b"Content-Type: multipart/signed" in mail
    checked = openssl("cms", "-verify", "-CAfile", str(mail_pki.root_path), stdin=mail)
    assert checked.returncode == 0, checked.stderr
    assert b'filename="envelope.xml"' in checked.stdout
    assert b"Content-ID: <request-1.pdf>" in checked.stdout
    assert b"filename*=utf-8''notas%20%C2%AB" in checked.stdout  # RFC 2231 file name
    [incoming] = list(inbox.fetch())
    assert (incoming.problem, incoming.channel_sender) == (None, "AR-MJ")
    assert incoming.details["encrypted"] == "no"
    assert incoming.envelope == outgoing.envelope


def test_a_resend_carries_the_same_message_id(
    outgoing: Outgoing, relay: SmtpRelay, ar_smime: Signer, mail_engine: TrustEngine
) -> None:
    sender = counterpart(ar_smime, mail_engine, relay, None)

    first, second = sender.send(outgoing), sender.send(outgoing)

    assert first == second
    ids = [line for mail in relay.received for line in mail.split(b"\r\n") if b"Message-ID" in line]
    assert ids == [f"Message-ID: {first.reference}".encode()] * 2


@pytest.mark.parametrize(
    ("where", "reply", "error"),
    [
        ("data", "451 4.7.1 Greylisted, come back in 5 minutes", TransientError),
        ("rcpt", "452 4.2.2 Mailbox over quota", TransientError),
        ("rcpt", "550 5.1.1 <es@es.example>: mailbox unavailable", PermanentError),
        ("data", "554 5.7.1 Message refused by policy", PermanentError),
    ],
    ids=["451-data", "452-rcpt", "550-rcpt", "554-data"],
)
def test_smtp_replies_decide_between_retry_and_failure(
    where: str,
    reply: str,
    error: type[Exception],
    outgoing: Outgoing,
    relay: SmtpRelay,
    mailbox: Dovecot,
    ar_smime: Signer,
    mail_engine: TrustEngine,
) -> None:
    setattr(relay, f"{where}_reply", reply)
    code, text = reply.split(" ", 1)

    with pytest.raises(error) as raised:
        counterpart(ar_smime, mail_engine, relay, None).send(outgoing)

    assert type(raised.value) is error
    assert code in str(raised.value) and text in str(raised.value)
    assert mailbox.messages("es") == []


def test_unreachable_smtp_server_is_transient(
    outgoing: Outgoing, ar_smime: Signer, mail_engine: TrustEngine
) -> None:
    sender = EmailAdapter(
        signer=ar_smime,
        engine=mail_engine,
        channel=EmailChannel(GATEWAY),
        smtp=SmtpConfig("127.0.0.1", COUNTERPART, port=free_port(), timeout=5),
    )

    with pytest.raises(TransientError, match="could not be reached"):
        sender.send(outgoing)


def test_attachments_above_the_size_limit_are_refused_before_sending(
    outgoing: Outgoing, relay: SmtpRelay, ar_smime: Signer, mail_engine: TrustEngine
) -> None:
    sender = counterpart(ar_smime, mail_engine, relay, None, max_message_bytes=len(PDF))

    with pytest.raises(PermanentError, match=r"more than the \d+ bytes"):
        sender.send(outgoing)
    assert relay.received == []


def test_an_attachment_that_no_longer_matches_its_digest_is_not_sent(
    outgoing: Outgoing, relay: SmtpRelay, ar_smime: Signer, mail_engine: TrustEngine
) -> None:
    changed = attachment("request-1.pdf", "application/pdf", "a.pdf", PDF)
    changed = OutgoingPart(**{**changed.__dict__, "open": lambda: io.BytesIO(PDF[:-1] + b"!")})
    broken = Outgoing(MESSAGE_ID, outgoing.envelope, (changed,))

    with pytest.raises(PermanentError, match="does not match its manifest"):
        counterpart(ar_smime, mail_engine, relay, None).send(broken)
    assert relay.received == []


# --- inbound mail that must not be believed


def tampered(mail: bytes) -> bytes:
    assert b"carries the signed envelope" in mail
    return mail.replace(b"carries the signed envelope", b"carries the signed envelopE", 1)


def unsigned(envelope: bytes) -> bytes:
    return (
        b"From: mla@ar.example\r\nTo: es@es.example\r\nSubject: unsigned\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="envelope.xml"\r\n\r\n'
        + base64.encodebytes(envelope).replace(b"\n", b"\r\n")
        + b"\r\n--b--\r\n"
    )


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("tampered", "changed after signing"),
        ("unsigned", "not S/MIME signed"),
        ("foreign-signer", "INDETERMINATE"),
        ("not-an-authority", "not the S/MIME certificate of any authority"),
        ("encrypted-to-someone-else", "cannot be decrypted"),
        ("no-envelope", "no envelope.xml part"),
    ],
)
def test_bad_inbound_mail_is_reported_and_moved_to_rejected(
    case: str,
    problem: str,
    outgoing: Outgoing,
    relay: SmtpRelay,
    mailbox: Dovecot,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
    tmp_path: Path,
) -> None:
    relay.deliver = False
    if case in ("tampered", "unsigned", "no-envelope"):
        counterpart(ar_smime, mail_engine, relay, None).send(outgoing)
        mail = relay.received[0]
        if case == "tampered":
            mail = tampered(mail)
        elif case == "unsigned":
            mail = unsigned(outgoing.envelope)
        else:
            entity = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b--\r\n"
            mail = b"From: mla@ar.example\r\n" + sign_smime(entity, ar_smime)
        mailbox.deliver("es", mail)
    else:
        if case == "foreign-signer":
            signer = issue_smime(create_dev_pki(tmp_path / "other"), "forger", COUNTERPART)
        elif case == "not-an-authority":
            signer = issue_smime(mail_pki, "stranger", "x@ar.example")
        else:
            signer = ar_smime
        relay.deliver = True
        recipient = mail_pki.cert_path(
            "ar-smime" if case.startswith("encrypted") else "gw-es-smime"
        )
        counterpart(signer, mail_engine, relay, recipient).send(outgoing)

    [incoming] = list(inbox.fetch())

    assert incoming.problem is not None and problem in incoming.problem
    assert incoming.channel_sender is None
    assert incoming.envelope == b"" and incoming.attachments == ()
    [kept] = mailbox.messages("es")
    assert incoming.details["sha256"] == hashlib.sha256(kept).hexdigest()
    inbox.acknowledge(incoming, "rejected")
    assert mailbox.messages("es") == []
    assert len(mailbox.messages("es", "Rejected")) == 1
    assert list(inbox.fetch()) == []


def test_oversized_inbound_mail_is_refused_unread(
    outgoing: Outgoing,
    relay: SmtpRelay,
    mailbox: Dovecot,
    es_smime: Signer,
    ar_smime: Signer,
    mail_engine: TrustEngine,
) -> None:
    counterpart(ar_smime, mail_engine, relay, None).send(outgoing)
    small = EmailAdapter(
        signer=es_smime,
        engine=mail_engine,
        imap=ImapConfig(
            "127.0.0.1", "es", PASSWORD, port=mailbox.imap_port, ssl=False, max_message_bytes=4096
        ),
        sender_for=lambda cert: "AR-MJ",
    )
    try:
        [incoming] = list(small.fetch())
    finally:
        small.close()

    assert incoming.problem is not None and "larger than the limit of 4096" in incoming.problem
    assert incoming.channel_sender is None


def test_answered_mail_is_moved_aside_and_not_fetched_again(
    outgoing: Outgoing,
    relay: SmtpRelay,
    mailbox: Dovecot,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
) -> None:
    sender = counterpart(ar_smime, mail_engine, relay, None)
    sender.send(outgoing)
    sender.send(Outgoing("second-message", outgoing.envelope, outgoing.attachments))
    mailbox.deliver("es", unsigned(outgoing.envelope))

    fetched = list(inbox.fetch(limit=10))
    assert [i.problem is None for i in fetched] == [True, True, False]
    assert list(inbox.fetch(limit=1)) == fetched[:1]  # unanswered mail is fetched again

    inbox.acknowledge(fetched[0], "accepted")
    inbox.acknowledge(fetched[1], "accepted")
    inbox.acknowledge(fetched[2], "rejected")

    assert mailbox.messages("es") == []
    processed = mailbox.messages("es", "Processed")
    assert [b"second-message" in mail for mail in processed] == [False, True]
    assert len(mailbox.messages("es", "Rejected")) == 1
    assert list(inbox.fetch()) == []


def test_unreachable_imap_server_is_transient(es_smime: Signer, mail_engine: TrustEngine) -> None:
    adapter = EmailAdapter(
        signer=es_smime,
        engine=mail_engine,
        imap=ImapConfig("127.0.0.1", "es", PASSWORD, port=free_port(), ssl=False, timeout=5),
    )

    with pytest.raises(TransientError, match=r"IMAP server 127\.0\.0\.1"):
        list(adapter.fetch())


def test_wrong_imap_password_is_permanent(
    mailbox: Dovecot, es_smime: Signer, mail_engine: TrustEngine
) -> None:
    adapter = EmailAdapter(
        signer=es_smime,
        engine=mail_engine,
        imap=ImapConfig("127.0.0.1", "es", "wrong", port=mailbox.imap_port, ssl=False),
    )

    with pytest.raises(PermanentError, match="refused the login of es"):
        list(adapter.fetch())


# ---- channel-override notices (gateway.notice) ----------------------------------


def _parts(entity: bytes) -> dict[str, Message]:
    parsed = BytesParser(policy=compat32).parsebytes(entity)
    assert parsed.get_content_type() == "multipart/mixed"
    return {part.get_filename() or part.get_content_type(): part for part in parsed.get_payload()}


@pytest.mark.parametrize("issuer", ["Rogatory gateway of Argentina", "Pasarela de la República"])
def test_a_notice_by_email_is_a_signed_mail_that_openssl_verifies(
    relay: SmtpRelay,
    mailbox: Dovecot,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
    issuer: str,
) -> None:
    notice = notice_for(ar_smime, issuer)
    receipt = counterpart(ar_smime, mail_engine, relay, None).send_notice(notice)

    assert receipt.reference == f"<notice-{notice.notice_id}@ar.example>"
    [mail] = relay.received
    assert f"Subject: Rogatory notice about message {NOTICE_ABOUT}".encode() in mail
    assert b"Content-Type: multipart/signed" in mail
    checked = openssl("cms", "-verify", "-CAfile", str(mail_pki.root_path), stdin=mail)
    assert checked.returncode == 0, checked.stderr
    parts = _parts(checked.stdout)
    assert set(parts) == {"text/plain", notice.file_name}
    text = parts["text/plain"].get_payload(decode=True).decode("utf-8")
    assert all(len(line) <= 78 for line in text.split("\r\n"))
    assert notice.notice_id in text and NOTICE_ABOUT in text  # an id is never cut in two
    words = " ".join(text.split())
    assert words.startswith(notice.summary) and issuer in words
    assert words.endswith(f"The gateway's signed notice is attached ({notice.file_name}).")
    attached = parts[notice.file_name].get_payload(decode=True)
    assert attached == notice.document
    assert read_notice(attached, mail_engine, expect_issuer="gw-ar").notice.notice_id == (
        notice.notice_id
    )
    assert len(mailbox.messages("es")) == 1  # delivered to the counterpart's mailbox


def test_a_notice_by_email_is_encrypted_when_the_channel_names_a_certificate(
    relay: SmtpRelay,
    es_smime: Signer,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
) -> None:
    notice = notice_for(ar_smime)
    sender = counterpart(ar_smime, mail_engine, relay, mail_pki.cert_path("gw-es-smime"))
    sender.send_notice(notice)

    [mail] = relay.received
    assert notice.notice_id.encode() in mail  # in the Message-ID; nothing else in clear
    assert NOTICE_ABOUT.encode() in mail and notice.file_name.encode() not in mail
    opened = openssl(
        "cms", "-decrypt", "-recip", str(mail_pki.cert_path("gw-es-smime")),
        "-inkey", str(mail_pki.key_path("gw-es-smime")), stdin=mail,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    checked = openssl("cms", "-verify", "-CAfile", str(mail_pki.root_path), stdin=opened.stdout)
    assert checked.returncode == 0, checked.stderr
    assert _parts(checked.stdout)[notice.file_name].get_payload(decode=True) == notice.document


def test_a_notice_by_email_is_fetched_as_a_notice_with_its_signed_document(
    relay: SmtpRelay,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    mail_pki: DevPKI,
) -> None:
    notice = notice_for(ar_smime)
    counterpart(ar_smime, mail_engine, relay, mail_pki.cert_path("gw-es-smime")).send_notice(notice)

    [incoming] = list(inbox.fetch())
    assert incoming.problem is None, incoming.problem
    assert (incoming.kind, incoming.channel_sender) == ("notice", "AR-MJ")
    assert incoming.envelope == notice.document and incoming.attachments == ()
    assert incoming.details["encrypted"] == "yes"


@pytest.mark.parametrize(
    ("media_type", "file_name"),
    [("application/octet-stream", "notice-x.xml"), ("application/xml", "notes.xml")],
)
def test_a_mail_that_is_not_quite_a_notice_is_refused_as_a_mail(
    relay: SmtpRelay,
    inbox: EmailAdapter,
    ar_smime: Signer,
    mail_engine: TrustEngine,
    media_type: str,
    file_name: str,
) -> None:
    mixed = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nA notice.\r\n--b\r\n"
        + f'Content-Type: {media_type}; name="{file_name}"\r\n'.encode()
        + b"Content-Transfer-Encoding: base64\r\n"
        + f'Content-Disposition: attachment; filename="{file_name}"\r\n\r\n'.encode()
        + base64.encodebytes(b"<Notice/>")
        + b"\r\n--b--\r\n"
    )
    sender = counterpart(ar_smime, mail_engine, relay, None)
    sender._mail(mixed, "not-quite", "Rogatory notice")  # the S/MIME framing of a real send

    [incoming] = list(inbox.fetch())
    assert incoming.kind == "message"
    assert incoming.problem is not None  # what unpacking a message says of it
    assert "Content-ID" in incoming.problem or "envelope.xml" in incoming.problem
