"""Polling the pull channels (IMAP, SFTP drops): what arrives goes through intake like any post.

A fetched item whose channel-level check failed (a bad S/MIME signature, a
malformed drop) is refused here: recorded in the audit log with the digest
of what arrived, kept in the blob store, and moved aside as rejected. The
rest is handed to ``IntakeService.receive`` with the authority the channel
vouches for; intake answers it as it answers a peer (the envelope verified,
its signer bound to that authority, its recipient one of ours) and records
the Delivery or the rejection. An item is acknowledged only once its answer
is durable; an internal error leaves it in place for the next poll.

A gateway's channel-override notice that such a channel brings (an item of
kind "notice") goes to ``accept_notice`` instead (gateway.peer_notice, with
the channel's kind and the authority it vouches for): taken, it is moved to
processed; refused (recorded there), to rejected; one whose signature cannot
be checked now stays in place and is read again at the next poll.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.base import AdapterError, Incoming, PullAdapter
from gateway.audit import AuditEvent, AuditLog
from gateway.blobs import BlobStore
from gateway.client import related_body
from gateway.intake import IntakeService
from gateway.intake_records import Origin
from gateway.peer_notice import NoticeRefused, NoticeTaken

log = logging.getLogger("rogatory.poller")

MAX_REMEMBERED_DEFERRALS = 10_000

# (channel kind, authority whose channel it came by, the notice's bytes, whether the same
# bytes were deferred before); NoticeRefused if not taken.
AcceptNotice = Callable[[str, str, bytes, bool], NoticeTaken]


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
        accept_notice: AcceptNotice | None = None,
    ) -> None:
        self.intake = intake
        self.accept_notice = accept_notice
        # SHA-256 of notices deferred (revocation data out of reach) and still waiting:
        # one notice.deferred entry per outage, not one per poll.
        self._deferred: set[str] = set()
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
        if incoming.kind == "notice":
            return self._take_notice(source, incoming, sender)
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

    def _take_notice(self, source: PullSource, incoming: Incoming, sender: str) -> str:
        where = f"{source.kind} {incoming.reference}"
        if self.accept_notice is None:
            return f"deferred: notice {where}: this poller reads no notices"
        digest = hashlib.sha256(incoming.envelope).hexdigest()
        try:
            taken = self.accept_notice(
                source.kind, sender, incoming.envelope, digest in self._deferred
            )
        except NoticeRefused as exc:
            if exc.try_later:
                if len(self._deferred) >= MAX_REMEMBERED_DEFERRALS:
                    self._deferred.clear()  # at worst, one more entry each
                self._deferred.add(digest)
                return f"deferred: notice {where}: {exc}"
            self._deferred.discard(digest)
            source.adapter.acknowledge(incoming, "rejected")
            return f"refused: notice {where} from {sender}: {exc}"
        except Exception:  # an internal error: the notice stays for the next poll
            log.exception("notice %s could not be judged", where)
            return f"deferred: notice {where}: the gateway could not judge it"
        self._deferred.discard(digest)
        source.adapter.acknowledge(incoming, "accepted")
        notice = taken.notice
        again = "" if taken.new else " (already recorded)"
        return (
            f"notice: {where} from gateway {notice.issuer.id} about message "
            f"{notice.in_reply_to}{again}"
        )


def _detail(body: bytes) -> str:
    import json

    try:
        return str(json.loads(body).get("detail", ""))[:500]
    except ValueError:
        return body[:200].decode("utf-8", "replace")
