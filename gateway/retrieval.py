"""Collecting a message: the recipient takes it, the gateway proves so with a Retrieval evidence."""

from __future__ import annotations

import json

from signing.keys import Signer
from signing.timestamp import TimeStamper

from .authorities import Authority
from .blobs import BlobStore
from .evidence import GatewayRef, MessageRef, build_evidence, sign_evidence
from .model import Direction, EvidenceType, Status
from .store import EvidenceRecord, MessageStore, NotRecipient, UnknownMessage


def collect(
    store: MessageStore,
    blobs: BlobStore,
    signer: Signer,
    issuer: GatewayRef,
    message_id: str,
    authority: Authority,
    *,
    timestamper: TimeStamper | None = None,
) -> bytes:
    """The signed Retrieval evidence; collecting twice answers with the first one."""
    message = store.message(message_id)
    if message is None:
        raise UnknownMessage(f"no message {message_id}")
    if message.recipient_id != authority.id:
        raise NotRecipient(f"{authority.id} is not the recipient of {message_id}")
    if message.status is Status.RETRIEVED:
        for record in store.evidences(message_id):
            if record.type is EvidenceType.RETRIEVAL:
                return blobs.read(record.sha256)
    reference = MessageRef.of_stored(message)
    evidence = build_evidence(EvidenceType.RETRIEVAL, reference, issuer)
    signed = sign_evidence(evidence, signer, timestamper=timestamper)
    blob = blobs.put(signed)
    record = EvidenceRecord(
        evidence.evidence_id,
        EvidenceType.RETRIEVAL,
        evidence.event_time,
        blob.sha256,
        message.envelope_sha256,
    )
    # A message a peer gateway brought: its sender hears of the retrieval by the same way.
    send_back = None
    arrived_via = message.arrived_via if message.direction is Direction.INBOUND else None
    if arrived_via is not None and json.loads(arrived_via).get("kind") == "gateway":
        send_back = arrived_via
    store.record_retrieval(message_id, authority.id, record, send_back=send_back)
    return signed
