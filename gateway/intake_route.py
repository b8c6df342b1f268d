"""What an accepted outbound message does next, decided in its acceptance.

For a recipient served elsewhere the route is decided now (gateway.routing)
and written with the acceptance: queued for the dispatcher with the chosen
channel, plus a notice to the conversation's channel when the reply leaves
by another one; or, with no route, failed at once with the reason. A reply
goes back by the channel its request arrived on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.authorities import AuthorityDirectory
from gateway.envelope import Envelope
from gateway.model import Status
from gateway.notice import new_notice_id
from gateway.routing import Facts, NoRoute, channel_key, decide
from gateway.store import MessageStore
from gateway.store_records import OutboxEntry


@dataclass(frozen=True)
class Plan:
    """The steps after ``accepted``, the outbox rows, and the route as stored (JSON)."""

    then: tuple[Status, ...]
    then_reason: str | None = None  # why the last step (a failure) happened
    outbox: OutboxEntry | None = None
    notice: OutboxEntry | None = None
    route: str | None = None


def plan_route(
    store: MessageStore,
    directory: AuthorityDirectory,
    envelope: Envelope,
    override: str | None,
) -> Plan:
    """The plan for ``envelope``, whose recipient is not served here."""
    arrived_via = None
    if envelope.in_reply_to:
        earlier = store.message(envelope.in_reply_to)
        # A reply to a message that came in from the recipient goes back the same way.
        if earlier is not None and earlier.sender_id == envelope.recipient.id:
            arrived_via = earlier.arrived_via
    facts = Facts(
        recipient_id=envelope.recipient.id,
        request_type=envelope.request_type.value,
        language=envelope.language,
        arrived_via=arrived_via,
        override=override,
    )
    route = decide(facts, directory.get(envelope.recipient.id))
    if isinstance(route, NoRoute):
        return Plan((Status.FAILED,), f"no route: {route.reason}")
    decision: dict[str, object] = {"channel": json.loads(route.key()), "why": route.why}
    notice = None
    if route.notice_by is not None:
        # The conversation's channel is told, in the same transaction.
        notice = OutboxEntry(channel_key(route.notice_by), "notice", new_notice_id())
        decision["notice_by"] = json.loads(notice.channel)
        decision["notice_reason"] = route.notice_reason
    return Plan((Status.QUEUED,), None, OutboxEntry(route.key()), notice, json.dumps(decision))
