"""Polling the pull channels (IMAP, SFTP drops): what arrives goes through intake like any post.

A fetched item whose channel-level check failed (a bad S/MIME signature, a
malformed drop) is refused here: recorded in the audit log with the digest
of what arrived, kept in the blob store, and moved aside as rejected. The
rest is handed to ``IntakeService.receive`` with the authority the channel
vouches for; intake answers it as it answers a peer (the envelope verified,
its signer bound to that authority, its recipient one of ours) and records
the Delivery or the rejection. An item is acknowledged only once its answer
is durable; an internal error leaves it in place for the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from adapters.base import AdapterError, Incoming, PullAdapter
from gateway.audit import AuditEvent, AuditLog
from gateway.blobs import BlobStore
from gateway.client import related_body
from gateway.intake import IntakeService
from gateway.intake_records import Origin

log = logging.getLogger("rogatory.poller")


@dataclass(frozen=True)
class PullSource:
    kind: str  # "email" or "sftp"
    name: str  # for logs: the mailbox, or the authority whose drop it is
    adapter: PullAdapter


class Poller:
    def __init__(
        self,
        intake: IntakeService,
        audit: AuditLog,
        blobs: BlobStore,
        sources: Sequence[PullSource],
        *,
        limit: int = 100,
    ) -> None:
        self.intake = intake
        self.audit = audit
        self.blobs = blobs
        self.sources = tuple(sources)
        self.limit = limit

    def poll(self) -> list[str]:
        """One pass over every source; a line per item (or per source that failed)."""
        lines: list[str] = []
        for source in self.sources:
            try:
                items = list(source.adapter.fetch(self.limit))
            except AdapterError as exc:
                lines.append(f"poll failed: {source.kind} {source.name}: {exc}")
                continue
            for incoming in items:
                try:
                    lines.append(self._take(source, incoming))
                except AdapterError as exc:
                    lines.append(f"deferred: {incoming.reference}: {exc}")
        return lines

    def _take(self, source: PullSource, incoming: Incoming) -> str:
        if incoming.problem is not None or incoming.channel_sender is None:
            reason = incoming.problem or "the channel vouches for no sender"
            kept = self.blobs.put(incoming.envelope)
            event = AuditEvent(
                "inbound.refused", f"{source.kind}:{source.name}", None,
                {"reference": incoming.reference, "reason": reason[:2000],
                 "envelope_sha256": kept.sha256, **incoming.details},
            )  # fmt: skip
            self.audit.append(event)
            source.adapter.acknowledge(incoming, "rejected")
            return f"refused: {source.kind} {incoming.reference}: {reason}"
        sender = incoming.channel_sender
        origin = Origin(
            principal=f"{source.kind}:{sender}", kind=source.kind, vouched_sender=sender
        )
        content_type, body = related_body(
            incoming.envelope, [(p.content_id, p.media_type, p.data) for p in incoming.attachments]
        )
        answer = self.intake.receive(origin, content_type, [body], len(body))
        if answer.status >= 500:
            return f"deferred: {source.kind} {incoming.reference}: the gateway could not answer"
        accepted = answer.status == 202
        source.adapter.acknowledge(incoming, "accepted" if accepted else "rejected")
        if accepted:
            return f"received: {source.kind} {incoming.reference} from {sender}"
        return f"rejected: {source.kind} {incoming.reference} from {sender}: {_detail(answer.body)}"


def _detail(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("detail", ""))[:500]
    except ValueError:
        return body[:200].decode("utf-8", "replace")
