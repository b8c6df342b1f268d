"""A peer's notice, taken or refused by ``gateway.peer_notice.accept_notice`` (no HTTP), and
one that a pull channel brings, through the poller to ``accept_channel_notice``.

gw-es (this gateway, tests.test_notice's store and intake) sends ES-MJ's messages
to AR-MJ through gw-ar, or by e-mail when ES-MJ asks. gw-ar serves AR-MJ and
AR-PGN; AR-XX is reached by e-mail only.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.base import Incoming, Outcome
from gateway import demo_messages
from gateway.authorities import Authority, AuthorityDirectory, fingerprint
from gateway.channels import PeerGateway
from gateway.db import Database
from gateway.evidence import GatewayRef, MessageRef, build_evidence, sign_evidence
from gateway.intake import IntakeService
from gateway.model import EvidenceType
from gateway.notice import NoticeChannel, ReplyRef, build_notice, sign_notice
from gateway.peer_evidence import PeerEvidenceRefused, accept_from_peer
from gateway.peer_notice import (
    MAX_NOTICE_BYTES,
    NoticeRefused,
    NoticeTaken,
    accept_channel_notice,
    accept_notice,
)
from gateway.pki import DevPKI
from gateway.poller import Poller, PullSource
from gateway.store import MessageStore
from signing.keys import Signer
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from tests.conftest import signer_for, unreachable_crl_signer
from tests.test_notice import GW_AR, MAIL_AR, conversation, es_intake, post

GW_AR_REF = GatewayRef("gw-ar", "Rogatory gateway of Argentina", "AR")


def peer_directory(signer: Signer) -> tuple[AuthorityDirectory, PeerGateway]:
    peer = PeerGateway(
        "gw-ar", "https://127.0.0.1:9/", evidence_signers=frozenset({fingerprint(signer.cert)})
    )
    authorities = [
        Authority("ES-MJ", "ES", "Ministerio de Justicia"),
        Authority("AR-MJ", "AR", "Ministerio de Justicia", channels=(GW_AR, MAIL_AR)),
        Authority("AR-PGN", "AR", "Procuración General de la Nación", channels=(GW_AR,)),
        Authority("AR-XX", "AR", "Reached by e-mail only", channels=(MAIL_AR,)),
    ]
    return AuthorityDirectory(authorities, [peer]), peer


@pytest.fixture()
def intake(db: Database, pki: DevPKI, engine: TrustEngine, tmp_path: Path) -> IntakeService:
    return es_intake(db, pki, engine, tmp_path)


@pytest.fixture()
def store(intake: IntakeService) -> MessageStore:
    return intake.store


@pytest.fixture(scope="module")
def gw_ar_signer(pki: DevPKI) -> Signer:
    return signer_for(pki, "CO-FGN")  # any certificate of the dev PKI serves as gw-ar's


def sent_by_es(intake: IntakeService, pki: DevPKI, **kw: str) -> demo_messages.Example:
    """ES-MJ's message to AR-MJ, accepted and routed (through gw-ar unless ``channel``)."""
    talk = conversation(intake, pki)
    post(intake, pki, talk.answer, **kw)
    return talk.answer


def gw_ar_notice(about: demo_messages.Example, signer: Signer, *, sender: str = "AR-MJ") -> bytes:
    notice = build_notice(
        str(uuid.uuid4()), GW_AR_REF, about.message_id,
        ReplyRef(str(uuid.uuid4()), sender, "ES-MJ", "cd" * 32),
        NoticeChannel("email"), "the sender chose the email channel",
        conversation_id=about.conversation_id,
    )  # fmt: skip
    return sign_notice(notice, signer)


def refused(entries: list[object]) -> list[dict[str, object]]:
    return [e.details for e in entries if e.kind == "notice.refused"]  # type: ignore[attr-defined]


def test_a_notice_is_taken_only_about_a_message_routed_to_that_peer(
    intake: IntakeService, store: MessageStore, pki: DevPKI, gw_ar_signer: Signer
) -> None:
    peers, peer = peer_directory(gw_ar_signer)
    by_mail = sent_by_es(intake, pki, channel="email")  # gw-ar serves AR-MJ, but not this way
    with pytest.raises(NoticeRefused) as caught:
        accept_notice(store, intake.engine, peers, peer, by_mail.message_id,
                      gw_ar_notice(by_mail, gw_ar_signer))  # fmt: skip
    assert (caught.value.status, caught.value.code) == (404, "unknown-message")
    assert "was sent to gateway gw-ar" in str(caught.value)

    through_gw_ar = sent_by_es(intake, pki)
    taken = accept_notice(store, intake.engine, peers, peer, through_gw_ar.message_id,
                          gw_ar_notice(through_gw_ar, gw_ar_signer))  # fmt: skip
    assert taken.new


def test_the_replys_sender_must_be_one_the_peer_serves_not_only_the_recipient(
    intake: IntakeService, store: MessageStore, pki: DevPKI, gw_ar_signer: Signer
) -> None:
    peers, peer = peer_directory(gw_ar_signer)
    sent = sent_by_es(intake, pki)
    # Another authority gw-ar serves may answer (a request passed on within Argentina).
    other = gw_ar_notice(sent, gw_ar_signer, sender="AR-PGN")
    assert accept_notice(store, intake.engine, peers, peer, sent.message_id, other).new
    for sender in ("AR-XX", "ES-MJ", "ZZ-NONE"):
        with pytest.raises(NoticeRefused) as caught:
            accept_notice(store, intake.engine, peers, peer, sent.message_id,
                          gw_ar_notice(sent, gw_ar_signer, sender=sender))  # fmt: skip
        assert caught.value.status == 422
        assert f"reply is from {sender}, which the authority directory does not list" in str(
            caught.value
        )


def test_refusals_before_verification_keep_the_digest_not_the_bytes(
    intake: IntakeService, store: MessageStore, pki: DevPKI, gw_ar_signer: Signer
) -> None:
    peers, peer = peer_directory(gw_ar_signer)
    sent = sent_by_es(intake, pki)
    genuine = gw_ar_notice(sent, gw_ar_signer)
    junk = f"<Notice>{uuid.uuid4()}</Notice>".encode()
    cases = [
        (sent.message_id, junk, 422),  # no valid signature
        (sent.message_id, genuine.replace(b">email<", b">sftp<"), 422),  # tampered
        (str(uuid.uuid4()), genuine, 404),
        (sent.message_id, b"<" * MAX_NOTICE_BYTES + junk, 413),
    ]
    for about, body, status in cases:
        before = store.audit.size()
        with pytest.raises(NoticeRefused) as caught:
            accept_notice(store, intake.engine, peers, peer, about, body)
        assert caught.value.status == status
        [entry] = [store.audit.entry(i) for i in range(before, store.audit.size())]
        assert entry.kind == "notice.refused"
        details = entry.details
        assert details["sha256"] == hashlib.sha256(body).hexdigest()
        assert (details["size"], details["kept"]) == (len(body), False)
        assert not store.blobs.exists(hashlib.sha256(body).hexdigest()), status

    # Refused after its signature verified (another gateway's signer): the bytes are kept.
    wrong = gw_ar_notice(sent, signer_for(pki, "PT-PGR"))
    with pytest.raises(NoticeRefused, match="not an evidence signer"):
        accept_notice(store, intake.engine, peers, peer, sent.message_id, wrong)
    [last] = refused(store.audit.entries_for(sent.message_id))[-1:]
    assert last["kept"] is True and store.blobs.read(str(last["sha256"])) == wrong


def test_a_revocation_outage_is_a_503_to_post_again_not_a_refusal(
    intake: IntakeService,
    store: MessageStore,
    pki: DevPKI,
    gw_ar_signer: Signer,
    tmp_path: Path,
) -> None:
    # gw-ar's own PKI, whose CRL is out of reach: the verdict is INDETERMINATE/TRY_LATER.
    live, unreachable = unreachable_crl_signer(tmp_path / "pki", "gw-ar-evidence")
    engine = TrustEngine(TrustPolicy(anchors=(live.root(),), fetch_timeout=2))
    peers, peer = peer_directory(unreachable)
    sent = sent_by_es(intake, pki)
    document = gw_ar_notice(sent, unreachable)

    with pytest.raises(NoticeRefused) as caught:
        accept_notice(store, engine, peers, peer, sent.message_id, document)
    assert (caught.value.status, caught.value.code) == (503, "revocation-unavailable")
    assert "TRY_LATER" in str(caught.value) and "again later" in str(caught.value)
    kinds = [e.kind for e in store.audit.entries_for(sent.message_id)]
    assert "notice.deferred" in kinds and "notice.refused" not in kinds
    assert not store.blobs.exists(hashlib.sha256(document).hexdigest())

    # The peer's evidences about that message are answered alike (gateway.peer_evidence).
    message = store.message(sent.message_id)
    assert message is not None
    retrieval = build_evidence(EvidenceType.RETRIEVAL, MessageRef.of_stored(message), GW_AR_REF)
    with pytest.raises(PeerEvidenceRefused) as refused_evidence:
        accept_from_peer(
            store, engine, peer, sent.message_id, sign_evidence(retrieval, unreachable)
        )
    assert refused_evidence.value.status == 503

    # Once the revocation data can be had, the same notice is taken.
    soft = TrustPolicy(anchors=(live.root(),), revocation=RevocationPolicy.SOFT, fetch_timeout=2)
    reachable = TrustEngine(soft)
    assert accept_notice(store, reachable, peers, peer, sent.message_id, document).new


class Drop:
    """A pull adapter holding given items, noting how each is acknowledged."""

    def __init__(self, *items: Incoming) -> None:
        self.items = list(items)
        self.answered: list[tuple[str, str]] = []

    def fetch(self, limit: int = 100) -> Iterator[Incoming]:
        yield from [i for i in self.items if i.reference not in dict(self.answered)][:limit]

    def acknowledge(self, incoming: Incoming, outcome: Outcome) -> None:
        self.answered.append((incoming.reference, outcome))

    def close(self) -> None:
        pass


def mail_poller(
    intake: IntakeService, engine: TrustEngine, peers: AuthorityDirectory, drop: Drop
) -> Poller:
    store = intake.store

    def take(kind: str, authority_id: str, data: bytes, deferred_before: bool) -> NoticeTaken:
        return accept_channel_notice(
            store, engine, peers, kind, authority_id, data, deferred_before=deferred_before
        )

    source = PullSource("email", "es@es.example/INBOX", drop)
    return Poller(intake, store.audit, store.blobs, [source], accept_notice=take)


def test_a_notice_by_a_channel_is_bound_to_the_channel_and_authority_the_message_left_by(
    intake: IntakeService, store: MessageStore, pki: DevPKI, gw_ar_signer: Signer
) -> None:
    peers, _ = peer_directory(gw_ar_signer)
    by_mail = sent_by_es(intake, pki, channel="email")
    through_gw_ar = sent_by_es(intake, pki)
    notice = gw_ar_notice(by_mail, gw_ar_signer)
    drop = Drop(
        # about a message that went through gw-ar, not by e-mail
        Incoming("1", gw_ar_notice(through_gw_ar, gw_ar_signer), channel_sender="AR-MJ",
                 kind="notice"),
        # by the e-mail of another authority than the one the message went to
        Incoming("2", notice, channel_sender="AR-XX", kind="notice"),
        # the reply it names is from another authority than the one whose channel it came by
        Incoming("3", gw_ar_notice(by_mail, gw_ar_signer, sender="AR-PGN"),
                 channel_sender="AR-MJ", kind="notice"),
        Incoming("4", notice, channel_sender="AR-MJ", kind="notice"),
        Incoming("5", notice, channel_sender="AR-MJ", kind="notice"),  # the same mail again
    )  # fmt: skip
    lines = mail_poller(intake, intake.engine, peers, drop).poll()  # type: ignore[arg-type]

    assert [line.split(":")[0] for line in lines] == [
        "refused", "refused", "refused", "notice", "notice",
    ], lines  # fmt: skip
    assert f"no message {through_gw_ar.message_id} was sent by email to AR-MJ" in lines[0]
    assert f"no message {by_mail.message_id} was sent by email to AR-XX" in lines[1]
    assert "the notice's reply is from AR-PGN" in lines[2]
    assert "already recorded" in lines[4]
    assert drop.answered == [
        ("1", "rejected"), ("2", "rejected"), ("3", "rejected"),
        ("4", "accepted"), ("5", "accepted"),
    ]  # fmt: skip
    kinds = [e.kind for e in store.audit.entries_for(by_mail.message_id)]
    assert kinds.count("notice.refused") == 1 and kinds.count("notice.received") == 1
    [refused] = [
        e.details for e in store.audit.entries_for(by_mail.message_id)
        if e.kind == "notice.refused"
    ]  # fmt: skip
    assert (refused["channel"], refused["authority"], refused["kept"]) == ("email", "AR-MJ", False)
    assert "notice.received" not in [
        e.kind for e in store.audit.entries_for(through_gw_ar.message_id)
    ]


def test_a_notice_by_a_channel_during_a_revocation_outage_stays_to_be_read_again(
    intake: IntakeService, store: MessageStore, pki: DevPKI, tmp_path: Path
) -> None:
    live, unreachable = unreachable_crl_signer(tmp_path / "pki", "gw-ar-evidence")
    engine = TrustEngine(TrustPolicy(anchors=(live.root(),), fetch_timeout=2))
    peers, _ = peer_directory(unreachable)
    by_mail = sent_by_es(intake, pki, channel="email")
    drop = Drop(Incoming("1", gw_ar_notice(by_mail, unreachable), channel_sender="AR-MJ",
                         kind="notice"))  # fmt: skip

    poller = mail_poller(intake, engine, peers, drop)
    for _ in range(3):  # read again at every poll while the outage lasts
        lines = poller.poll()
        assert [line.split(":")[0] for line in lines] == ["deferred"], lines
        assert "TRY_LATER" in lines[0] and drop.answered == []
    # Nothing in it is read before its signature verifies: the entry goes on no message.
    # One entry for the outage, not one per poll.
    audit = store.audit
    [deferred] = [audit.entry(i) for i in range(audit.size())
                  if audit.entry(i).kind == "notice.deferred"]  # fmt: skip
    assert deferred.message_id is None and deferred.details["channel"] == "email"

    soft = TrustPolicy(anchors=(live.root(),), revocation=RevocationPolicy.SOFT, fetch_timeout=2)
    lines = mail_poller(intake, TrustEngine(soft), peers, drop).poll()
    assert [line.split(":")[0] for line in lines] == ["notice"], lines
    assert drop.answered == [("1", "accepted")]
