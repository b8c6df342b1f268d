"""Evidences from a peer gateway: recognised only when the peer itself signed them.

Used where a peer's evidence arrives: in the answer to our send (its
Delivery) and later on its own (its Retrieval, once its authority collects
the message). An evidence counts only if its XAdES signature is TOTAL-PASSED
through the trust engine, its signing certificate is one the directory lists
for that peer (``evidence_signers``), its issuer is that peer, and it speaks
of this very message: the same message id and the SHA-256 of the envelope
bytes we sent. Anything else is refused with the reason, and is not counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509

from gateway.authorities import fingerprint
from gateway.blobs import BlobStore
from gateway.channels import PeerGateway
from gateway.evidence import Evidence, EvidenceError, read_evidence
from gateway.model import Direction, EvidenceType, IllegalTransition, Status
from gateway.post_refusals import PostRefused, RefusalTrail
from gateway.small_blobs import stage
from gateway.store import MessageStore
from gateway.store_records import EvidenceRecord, Message, StoreError
from signing.trust import TrustEngine

# What each positive evidence of a peer moves an outbound message to, from where.
ADVANCES: dict[EvidenceType, tuple[frozenset[Status], tuple[Status, ...]]] = {
    EvidenceType.RELAY_ACCEPTANCE: (frozenset({Status.SENDING}), (Status.RELAYED,)),
    EvidenceType.DELIVERY: (
        frozenset({Status.SENDING, Status.RELAYED}), (Status.DELIVERED,),
    ),
    EvidenceType.RETRIEVAL: (frozenset({Status.DELIVERED}), (Status.RETRIEVED,)),
}  # fmt: skip


@dataclass(frozen=True)
class PeerEvidence:
    evidence: Evidence
    record: EvidenceRecord


def recognise(
    data: bytes,
    peer: PeerGateway,
    message: Message,
    engine: TrustEngine | None,
    blobs: BlobStore,
    staged: dict[str, bytes] | None = None,
) -> PeerEvidence:
    """The peer's evidence about ``message``, kept as a blob; EvidenceError says why not.

    With ``staged``, small bytes are left there for the transaction that records
    the evidence (gateway.small_blobs.stage) instead of being written now.
    """
    if engine is None:
        raise EvidenceError("no trust anchors are configured: a peer's evidence cannot be checked")
    if not peer.evidence_signers:
        raise EvidenceError(
            f"the authority directory lists no evidence_signers for gateway {peer.id}: "
            "its evidences cannot be recognised"
        )
    verified = read_evidence(data, engine, expect_issuer=peer.id)
    refusal = signer_refusal(verified.signing_cert, peer, "evidence")
    if refusal is not None:
        raise EvidenceError(refusal)
    evidence = verified.evidence
    if evidence.message.message_id != message.message_id:
        raise EvidenceError(
            f"the evidence speaks of message {evidence.message.message_id}, "
            f"not {message.message_id}"
        )
    if evidence.message.sha256_hex != message.envelope_sha256:
        raise EvidenceError(
            "the evidence speaks of other envelope bytes than those sent "
            f"({evidence.message.sha256_hex}, not {message.envelope_sha256})"
        )
    sha256 = blobs.put(data).sha256 if staged is None else stage(blobs, data, staged)
    record = EvidenceRecord(
        evidence.evidence_id, evidence.type, evidence.event_time, sha256,
        message.envelope_sha256,
    )  # fmt: skip
    return PeerEvidence(evidence, record)


def signer_refusal(cert: x509.Certificate | None, peer: PeerGateway, what: str) -> str | None:
    """Why ``cert`` does not sign for ``peer`` (an evidence, a notice), or None when it does."""
    if not peer.evidence_signers:
        return (
            f"the authority directory lists no evidence_signers for gateway {peer.id}: "
            f"its {what}s cannot be recognised"
        )
    if cert is None or fingerprint(cert) not in peer.evidence_signers:
        found = fingerprint(cert) if cert is not None else "no certificate"
        return (
            f"the {what} is signed with {found}, which is not an evidence signer of "
            f"gateway {peer.id}"
        )
    return None


MAX_EVIDENCE_BYTES = 1024 * 1024


class PeerEvidenceRefused(PostRefused):
    """A peer's evidence that is not taken; ``status`` and ``code`` are the HTTP answer.

    503 (``revocation-unavailable``): its signature cannot be checked now; it may be
    posted again later.
    """


def accept_from_peer(
    store: MessageStore,
    engine: TrustEngine | None,
    peer: PeerGateway,
    message_id: str,
    data: bytes,
) -> tuple[PeerEvidence, bool]:
    """A peer's later evidence (its Retrieval) about a message we sent it: kept, status moved.

    Returns the evidence and whether it was new (a repeat changes nothing). A refusal
    is recorded (``evidence.refused``: the reason, the status answered, the SHA-256
    and size of what came; its bytes only if its signature verified) on the
    message when the peer has business with it, else on none; a signature that
    cannot be checked now is ``evidence.deferred`` and a 503 (gateway.post_refusals).
    """
    refusal = RefusalTrail(
        store, "evidence", f"gateway:{peer.id}", {"gateway": peer.id}, message_id, data,
        PeerEvidenceRefused,
    )  # fmt: skip
    if len(data) > MAX_EVIDENCE_BYTES:
        raise refusal.refuse(
            413, "evidence-too-large", f"an evidence is at most {MAX_EVIDENCE_BYTES} bytes"
        )
    message = store.message(message_id)
    if message is None or not sent_to_gateway(message, peer.id):
        raise refusal.refuse(
            404, "unknown-message", f"no message {message_id} was sent to gateway {peer.id}"
        )
    refusal.about = message_id
    try:
        found = recognise(data, peer, message, engine, store.blobs)
    except EvidenceError as exc:
        # Revocation data out of reach is no verdict on the evidence: the peer posts it again.
        if exc.try_later:
            raise refusal.defer(str(exc)) from None
        raise refusal.refuse(422, "evidence-invalid", str(exc)) from None
    advance = ADVANCES.get(found.evidence.type)
    statuses: tuple[Status, ...] = ()
    if advance is not None and message.status in advance[0]:
        statuses = advance[1]
    elif advance is not None and message.status not in advance[1]:
        raise refusal.refuse(
            409, "evidence-conflict",
            f"a {found.evidence.type.value} evidence cannot apply to message {message_id} "
            f"in status {message.status.value}",
            keep=True,  # verified: recognise kept its bytes
        )  # fmt: skip
    try:
        new = store.record_peer_evidence(
            message_id, found.record, statuses, actor=f"gateway:{peer.id}"
        )
    except (StoreError, IllegalTransition) as exc:
        raise refusal.refuse(409, "evidence-conflict", str(exc), keep=True) from None
    return found, new


def sent_to_gateway(message: Message, gateway_id: str) -> bool:
    """Whether ``message`` is one of ours that was routed to peer gateway ``gateway_id``.

    Only that peer may speak of it (its evidences, its notices): serving the
    recipient today is not enough, the message must have gone its way.
    """
    if message.direction is not Direction.OUTBOUND or message.route is None:
        return False
    channel = json.loads(message.route).get("channel", {})
    return bool(channel.get("kind") == "gateway" and channel.get("gateway") == gateway_id)
