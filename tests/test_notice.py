"""The channel-override notice: the document, its queueing at intake (SQLite and PostgreSQL),
and the dispatcher that signs it once and sends it, never failing the reply on its account.

ES-MJ is served here (gw-es); AR-MJ is reached through gw-ar or by e-mail. AR-MJ's
message arrives through gw-ar; ES-MJ's reply asks for e-mail (``?channel=email``), so
gw-ar is told by a notice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.base import OutgoingNotice, PermanentError, Receipt, TransientError
from gateway import demo_messages
from gateway.audit import AuditLog
from gateway.authorities import Authority, AuthorityDirectory, fingerprint
from gateway.blobs import blob_store_for
from gateway.channels import EmailChannel, GatewayChannel, PeerGateway
from gateway.db import Database
from gateway.dispatcher import Dispatcher
from gateway.evidence import GatewayRef
from gateway.intake import IntakeService
from gateway.intake_records import Origin
from gateway.model import Status
from gateway.notice import (
    Notice,
    NoticeChannel,
    NoticeError,
    ReplyRef,
    build_notice,
    file_name,
    new_notice_id,
    notice_xml,
    read_notice,
    sign_notice,
)
from gateway.notice_trail import notices_of
from gateway.outbox import Backoff
from gateway.pki import DevPKI
from gateway.routing import channel_key
from gateway.settings import Settings
from gateway.store import MessageStore
from gateway.store_records import outbox_table
from signing.keys import Signer
from signing.trust import TrustEngine
from signing.xades_sign import sign_xml
from tests.conftest import signer_for

GW_ES = GatewayRef("gw-es", "Rogatory test gateway", "ES")
GW_AR = GatewayChannel("gw-ar")
MAIL_AR = EmailChannel("mla@ar.example")


# ---- the document -------------------------------------------------------------------


def a_notice(**changes: Any) -> Notice:
    notice = build_notice(
        new_notice_id(), GW_ES, "1b0e6a52-7d3c-4c39-9a51-0c0ffee00001",
        ReplyRef("2b0e6a52-7d3c-4c39-9a51-0c0ffee00002", "ES-MJ", "AR-MJ", "ab" * 32),
        NoticeChannel("email"), "the sender chose the email channel",
        conversation_id="3b0e6a52-7d3c-4c39-9a51-0c0ffee00003",
    )  # fmt: skip
    return replace(notice, **changes)


@pytest.fixture(scope="session")
def gateway_signer(pki: DevPKI) -> Signer:
    return signer_for(pki, "MX-FGR")  # any certificate of the dev PKI serves as the gateway's


def test_a_signed_notice_reads_back_from_its_signed_content(
    gateway_signer: Signer, engine: TrustEngine
) -> None:
    notice = a_notice()
    signed = sign_notice(notice, gateway_signer)
    verified = read_notice(signed, engine, expect_issuer="gw-es")
    assert verified.notice == notice
    assert verified.signing_cert == gateway_signer.cert
    assert "is sent by e-mail rather than by the channel that message came by" in notice.summary()
    gateway = replace(notice, channel=NoticeChannel("gateway", "gw-ar"))
    assert read_notice(sign_notice(gateway, gateway_signer), engine).notice == gateway


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda s: s.replace(b">email<", b">sftp<"), "signature is not valid"),
        (lambda s: notice_xml(a_notice()), "signature is not valid"),
        (lambda s: b"<Notice", "signature is not valid"),
    ],
    ids=["tampered", "unsigned", "not-xml"],
)
def test_a_spoilt_notice_is_refused_with_the_reason(
    gateway_signer: Signer, engine: TrustEngine, spoil: Any, why: str
) -> None:
    with pytest.raises(NoticeError, match=why):
        read_notice(spoil(sign_notice(a_notice(), gateway_signer)), engine)


def test_a_notice_from_another_issuer_or_of_another_kind_is_refused(
    gateway_signer: Signer, engine: TrustEngine
) -> None:
    with pytest.raises(NoticeError, match="issued by 'gw-es', not by 'gw-ar'"):
        read_notice(sign_notice(a_notice(), gateway_signer), engine, expect_issuer="gw-ar")
    evidence = sign_xml(b"<Evidence xmlns='urn:rogatory:evidence:1'/>", gateway_signer)
    with pytest.raises(NoticeError, match="not a Rogatory notice"):
        read_notice(evidence, engine)
    with pytest.raises(NoticeError, match="names a gateway exactly when"):
        a_notice(channel=NoticeChannel("email", "gw-ar"))
    with pytest.raises(NoticeError, match="not valid"):
        notice_xml(a_notice(in_reply_to="not-a-uuid"))


NOTICE_ABOUT = "1b0e6a52-7d3c-4c39-9a51-0c0ffee00001"


def notice_for(
    signer: Signer, issuer_name: str = "Rogatory gateway of Argentina"
) -> OutgoingNotice:
    """A signed notice as an adapter gets it (for the channel tests)."""
    notice = build_notice(
        new_notice_id(), GatewayRef("gw-ar", issuer_name, "AR"), NOTICE_ABOUT,
        ReplyRef("2b0e6a52-7d3c-4c39-9a51-0c0ffee00002", "AR-MJ", "ES-MJ", "ab" * 32),
        NoticeChannel("sftp"), "the sender chose the sftp channel",
    )  # fmt: skip
    return OutgoingNotice(
        notice.notice_id, NOTICE_ABOUT, notice.reply.message_id, sign_notice(notice, signer),
        file_name(notice.notice_id), notice.summary(),
    )  # fmt: skip


# ---- intake: the notice is queued with the reply ---------------------------------------


def es_directory(pki: DevPKI) -> AuthorityDirectory:
    """gw-es's directory: ES-MJ served here; AR-MJ through gw-ar or by e-mail."""

    def signs(authority_id: str) -> frozenset[str]:
        return frozenset({fingerprint(pki.cert(authority_id))})

    return AuthorityDirectory(
        [
            Authority("ES-MJ", "ES", "Ministerio de Justicia", signing_certificates=signs("ES-MJ")),
            Authority(
                "AR-MJ",
                "AR",
                "Ministerio de Justicia y Derechos Humanos",
                signing_certificates=signs("AR-MJ"),
                channels=(GW_AR, MAIL_AR),
            ),
        ],
        [PeerGateway("gw-ar", "https://127.0.0.1:9/")],
    )


def es_intake(db: Database, pki: DevPKI, engine: TrustEngine, folder: Path) -> IntakeService:
    """gw-es's intake over a store in ``folder``, signing with any dev PKI certificate."""
    blobs = blob_store_for(db, folder / "data")
    store = MessageStore(db, blobs, AuditLog(db, origin="test.rogatory/notice"), gateway_id="gw-es")
    settings = Settings(mode="development", data_dir=folder / "data")
    return IntakeService(
        store, blobs, engine, es_directory(pki), signer_for(pki, "MX-FGR"), settings, issuer=GW_ES
    )


@pytest.fixture(scope="session")
def directory(pki: DevPKI) -> AuthorityDirectory:
    return es_directory(pki)


@pytest.fixture()
def intake(db: Database, pki: DevPKI, engine: TrustEngine, tmp_path: Path) -> IntakeService:
    return es_intake(db, pki, engine, tmp_path)


@pytest.fixture()
def store(intake: IntakeService) -> MessageStore:
    return intake.store


@dataclass
class Conversation:
    asked: demo_messages.Example  # AR-MJ's message, arrived through gw-ar
    answer: demo_messages.Example  # ES-MJ's reply to it


def conversation(intake: IntakeService, pki: DevPKI) -> Conversation:
    """AR-MJ's message arrives through gw-ar; ES-MJ's reply to it, not yet posted."""
    asked = demo_messages.reply(demo_messages.request(with_attachments=False))
    signed = sign_xml(asked.envelope, pki.signer("AR-MJ"))
    origin = Origin("gateway:gw-ar", "gateway", gateway="gw-ar")
    answer = intake.receive(origin, "application/xml", iter([signed]), len(signed))
    assert answer.status == 202, answer.body
    return Conversation(asked, demo_messages.reply(asked, kind="clarification-request", by="ES"))


def post(intake: IntakeService, pki: DevPKI, example: demo_messages.Example, **kw: Any) -> None:
    signed = sign_xml(example.envelope, pki.signer("ES-MJ"))
    es = intake.directory.get("ES-MJ")
    assert es is not None
    answer = intake.submit(es, "application/xml", iter([signed]), len(signed), **kw)
    assert answer.status == 202, answer.body


def queued(store: MessageStore, message_id: str) -> dict[str, Any]:
    with store.db.begin_read() as connection:
        rows = connection.execute(
            sa.select(outbox_table).where(outbox_table.c.message_id == message_id)
        ).all()
    return {row.kind: row for row in rows}


def test_an_override_queues_the_reply_and_a_notice_for_the_conversations_channel(
    intake: IntakeService, store: MessageStore, pki: DevPKI
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")

    reply = store.message(talk.answer.message_id)
    assert reply is not None and reply.status is Status.QUEUED
    rows = queued(store, reply.message_id)
    assert set(rows) == {"message", "notice"}
    assert rows["message"].channel == channel_key(MAIL_AR)  # the reply goes by e-mail
    assert rows["notice"].channel == channel_key(GW_AR)  # gw-ar is told
    assert rows["notice"].evidence_id and rows["notice"].evidence_id != rows["message"].id
    route = json.loads(reply.route or "{}")
    assert route["notice_by"] == json.loads(channel_key(GW_AR))
    assert route["notice_reason"] == "the sender chose the email channel"


def test_a_reply_by_its_conversations_channel_queues_no_notice(
    intake: IntakeService, store: MessageStore, pki: DevPKI
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer)
    rows = queued(store, talk.answer.message_id)
    assert set(rows) == {"message"} and rows["message"].channel == channel_key(GW_AR)


# ---- the dispatcher ------------------------------------------------------------------


@dataclass
class FakeChannels:
    """Every channel: a message send works; each notice send takes the next outcome."""

    outcomes: list[Exception | None] = field(default_factory=list)
    notices: list[OutgoingNotice] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    message_outcomes: list[Exception | None] = field(default_factory=list)  # likewise

    def adapter(self, channel: object) -> FakeChannels:
        return self

    def send(self, outgoing: Any) -> Receipt:
        self.messages.append(outgoing.message_id)
        outcome = self.message_outcomes.pop(0) if self.message_outcomes else None
        if outcome is not None:
            raise outcome
        return Receipt("fake://message")

    def send_notice(self, notice: OutgoingNotice) -> Receipt:
        self.notices.append(notice)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return Receipt("fake://notice")

    def send_evidence(self, *args: object) -> Receipt:
        raise AssertionError("no evidence goes back here")

    def close(self) -> None:
        pass


def dispatch(
    intake: IntakeService, channels: FakeChannels, engine: TrustEngine, attempts: int = 8
) -> Dispatcher:
    return Dispatcher(
        intake.store, intake.blobs, intake.directory, engine, intake.signer, GW_ES, channels,
        backoff=Backoff(0.001, 0.001, max_attempts=attempts), concurrency=1,
    )  # fmt: skip


def kinds(store: MessageStore, message_id: str) -> list[str]:
    return [e.kind for e in store.audit.entries_for(message_id) if e.kind.startswith("notice.")]


def test_the_notice_is_signed_once_sent_again_after_a_failure_and_recorded(
    intake: IntakeService, store: MessageStore, pki: DevPKI, engine: TrustEngine
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")
    channels = FakeChannels([TransientError("gw-ar is busy")])
    dispatcher = dispatch(intake, channels, engine)

    first = dispatcher.run_once()
    assert (first.sent, first.retried) == (1, 1), first.outcomes
    reply = store.message(talk.answer.message_id)
    assert reply is not None and reply.status is Status.RELAYED  # the reply went on its way
    time.sleep(0.01)
    second = dispatcher.run_once()
    assert second.sent == 1, second.outcomes
    assert queued(store, reply.message_id) == {}

    # Both attempts carried the same signed bytes, kept in the blob store.
    one, two = channels.notices
    assert one == two and one.in_reply_to == talk.asked.message_id
    assert one.file_name == f"notice-{one.notice_id}.xml"
    notice = read_notice(one.document, engine, expect_issuer="gw-es").notice
    assert notice.notice_id == one.notice_id
    assert notice.in_reply_to == talk.asked.message_id
    assert notice.conversation_id == talk.asked.conversation_id
    assert notice.reply == ReplyRef(reply.message_id, "ES-MJ", "AR-MJ", reply.envelope_sha256)
    assert notice.channel == NoticeChannel("email")
    assert notice.reason == "the sender chose the email channel"
    assert notice.summary() == one.summary

    assert kinds(store, reply.message_id) == ["notice.issued", "notice.retry", "notice.sent"]
    [sent] = [
        e.details for e in store.audit.entries_for(reply.message_id) if e.kind == "notice.sent"
    ]
    assert sent["notice_id"] == notice.notice_id
    assert sent["channel"] == channel_key(GW_AR) and sent["to"] == "gateway gw-ar"
    assert store.blobs.read(str(sent["sha256"])) == one.document
    [listed] = notices_of(store.audit, reply.message_id)
    assert (listed.direction, listed.reply_channel) == ("sent", "e-mail")
    reply = store.message(reply.message_id)
    assert reply is not None and reply.status is Status.RELAYED


@pytest.mark.parametrize(
    ("outcomes", "attempts", "reason"),
    [
        ([PermanentError("gateway gw-ar answered 404")], 8, "gateway gw-ar answered 404"),
        ([TransientError("down"), TransientError("down")], 2, "gave up after 2 attempts: down"),
    ],
    ids=["refused", "attempts-used-up"],
)
def test_a_notice_that_finally_fails_is_recorded_and_the_reply_is_not_failed(
    intake: IntakeService,
    store: MessageStore,
    pki: DevPKI,
    engine: TrustEngine,
    outcomes: list[Exception | None],
    attempts: int,
    reason: str,
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")
    dispatcher = dispatch(intake, FakeChannels(list(outcomes)), engine, attempts)
    for _ in range(attempts):
        dispatcher.run_once()
        time.sleep(0.01)

    reply = store.message(talk.answer.message_id)
    assert reply is not None and reply.status is Status.RELAYED
    assert Status.FAILED not in [c.status for c in store.history(reply.message_id)]
    assert queued(store, reply.message_id) == {}
    [given_up] = [
        e for e in store.audit.entries_for(reply.message_id) if e.kind == "notice.undeliverable"
    ]
    assert reason in str(given_up.details["reason"])
    assert kinds(store, reply.message_id)[-1] == "notice.undeliverable"
    [listed] = notices_of(store.audit, reply.message_id)
    assert (listed.state, listed.direction) == ("undeliverable", "sent")
    assert reason in str(listed.reason)


def test_a_notice_whose_channel_left_the_directory_fails_alone(
    intake: IntakeService,
    store: MessageStore,
    pki: DevPKI,
    engine: TrustEngine,
    directory: AuthorityDirectory,
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")
    ar = directory.get("AR-MJ")
    assert ar is not None
    moved = AuthorityDirectory(
        [directory.get("ES-MJ"), replace(ar, channels=(MAIL_AR,))],  # type: ignore[list-item]
        directory.gateways,
    )
    channels = FakeChannels()
    dispatcher = dispatch(replace_directory(intake, moved), channels, engine)
    stats = dispatcher.run_once()
    assert (stats.sent, stats.failed) == (1, 1), stats.outcomes
    assert channels.notices == []
    [given_up] = [
        e
        for e in store.audit.entries_for(talk.answer.message_id)
        if e.kind == "notice.undeliverable"
    ]
    assert "is no longer in the authority directory" in str(given_up.details["reason"])
    reply = store.message(talk.answer.message_id)
    assert reply is not None and reply.status is Status.RELAYED


def replace_directory(intake: IntakeService, directory: AuthorityDirectory) -> IntakeService:
    intake.directory = directory
    return intake


def test_the_notice_names_the_conversation_the_other_side_knows(
    intake: IntakeService, store: MessageStore, pki: DevPKI, engine: TrustEngine
) -> None:
    talk = conversation(intake, pki)
    own = new_notice_id()  # ES-MJ files its reply under a conversation of its own
    answer = replace(
        talk.answer,
        envelope=talk.answer.envelope.replace(talk.asked.conversation_id.encode(), own.encode()),
        conversation_id=own,
    )
    post(intake, pki, answer, channel="email")
    channels = FakeChannels()
    assert dispatch(intake, channels, engine).run_once().sent == 2
    [sent] = channels.notices
    notice = read_notice(sent.document, engine).notice
    assert notice.conversation_id == talk.asked.conversation_id != own


def test_the_notice_waits_while_the_reply_has_not_left_and_is_withdrawn_if_it_fails(
    intake: IntakeService, store: MessageStore, pki: DevPKI, engine: TrustEngine
) -> None:
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, channel="email")
    reply_id = talk.answer.message_id
    down = [PermanentError("no such mailbox")]
    channels = FakeChannels(message_outcomes=[TransientError("smtp is down"), *down])
    dispatcher = dispatch(intake, channels, engine, attempts=3)

    first = dispatcher.run_once()
    assert (first.retried, first.postponed) == (1, 1), first.outcomes
    reply = store.message(reply_id)
    assert reply is not None and reply.status is Status.WAITING_FOR_RETRY
    row = queued(store, reply_id)["notice"]
    assert row.attempts == 0 and "waiting for reply" in row.last_error  # no attempt used
    assert channels.notices == [] and kinds(store, reply_id) == []
    [pending] = notices_of(store.audit, reply_id)
    assert (pending.notice_id, pending.state) == (row.evidence_id, "pending")

    time.sleep(0.01)
    second = dispatcher.run_once()
    assert (second.failed, second.withdrawn) == (1, 1), second.outcomes
    reply = store.message(reply_id)
    assert reply is not None and reply.status is Status.FAILED
    assert channels.notices == [] and queued(store, reply_id) == {}
    assert kinds(store, reply_id) == ["notice.withdrawn"]  # never issued, never sent
    [withdrawn] = [e for e in store.audit.entries_for(reply_id) if e.kind == "notice.withdrawn"]
    assert withdrawn.details["notice_id"] == row.evidence_id
    assert f"reply {reply_id} failed" in str(withdrawn.details["reason"])
    [listed] = notices_of(store.audit, reply_id)
    assert (listed.state, listed.sha256) == ("withdrawn", None)
    assert "failed" in str(listed.reason)
