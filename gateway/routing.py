"""Routing decisions: which channel an accepted message leaves by. Plain data, no I/O.

The rules (issue 5; Medellín Treaty on later communications):

1. A recipient this gateway serves is delivered here; no route is needed.
2. A reply in a conversation (``in_reply_to`` names a message that arrived
   here) goes back by the channel that message arrived on, if the recipient
   still lists it and it takes such a message.
3. Otherwise, or when the sender asks for another kind of channel
   (``override``), the recipient's first listed channel of that kind that
   takes the message. If the override moved a reply off the channel its
   request came by, the route names that channel in ``notice_by``: the other
   side is told there, with ``notice_reason`` (gateway.notice).
4. No channel takes it: ``NoRoute`` with the reason, and the message fails
   visibly with it.

A channel is stored as a small JSON object (``channel_key``) naming it within
the recipient's directory entry, never its credentials: the dispatcher finds
the channel's current settings in the directory when it sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.authorities import Authority, AuthorityDirectory
from gateway.channels import (
    CHANNEL_KINDS,
    Channel,
    EmailChannel,
    GatewayChannel,
    describe,
)


@dataclass(frozen=True)
class Route:
    authority_id: str
    channel: Channel
    why: str
    notice_by: Channel | None = None  # the conversation's channel, told of the change
    notice_reason: str | None = None  # what that notice gives as the reason

    def key(self) -> str:
        return channel_key(self.channel)


@dataclass(frozen=True)
class NoRoute:
    reason: str


@dataclass(frozen=True)
class Facts:
    """What routing reads of an accepted message."""

    recipient_id: str
    request_type: str | None = None
    language: str | None = None
    arrived_via: str | None = None  # channel_key the replied-to message came by, if any
    override: str | None = None  # a channel kind the sender asked for


def channel_key(channel: Channel) -> str:
    """The stored name of a channel: its kind and what identifies it, as canonical JSON."""
    if isinstance(channel, GatewayChannel):
        fields: dict[str, object] = {"kind": "gateway", "gateway": channel.gateway}
    elif isinstance(channel, EmailChannel):
        fields = {"kind": "email", "address": channel.address}
    else:
        fields = {
            "kind": "sftp", "host": channel.host, "port": channel.port,
            "user": channel.user, "folder": channel.folder,
        }  # fmt: skip
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def find_channel(authority: Authority, key: str) -> Channel | None:
    """The authority's channel stored as ``key``, as the directory lists it now."""
    for channel in authority.channels:
        if channel_key(channel) == key:
            return channel
    return None


class ChannelGone(LookupError):
    """A stored channel the recipient's directory entry no longer lists."""


def channel_now(directory: AuthorityDirectory, recipient_id: str, key: str) -> Channel:
    """The channel stored as ``key`` as ``recipient_id``'s entry lists it now; ChannelGone if not.

    Work queued for a channel (a message, a notice) is sent with its current
    settings (credentials, pins), never with what was known when it was queued.
    """
    recipient = directory.get(recipient_id)
    channel = find_channel(recipient, key) if recipient is not None else None
    if channel is None:
        raise ChannelGone(
            f"the channel {key} of {recipient_id} is no longer in the authority directory"
        )
    return channel


def arrival_key(channel: Channel) -> str:
    """How an inbound message's channel is stored (``messages.arrived_via``)."""
    return channel_key(channel)


def decide(facts: Facts, recipient: Authority | None) -> Route | NoRoute:
    if recipient is None:
        return NoRoute(f"the recipient {facts.recipient_id} is not in the authority directory")
    if recipient.local:
        raise ValueError("a local recipient is delivered here, not routed")
    if facts.override is not None and facts.override not in CHANNEL_KINDS:
        return NoRoute(
            f"no channel of kind {facts.override!r}; kinds are {', '.join(CHANNEL_KINDS)}"
        )
    came_by = find_channel(recipient, facts.arrived_via) if facts.arrived_via else None
    refusals: list[str] = []
    came_by_refused: str | None = None  # why the conversation's channel does not take it
    if came_by is not None and facts.override in (None, came_by.kind):
        refused = came_by.accepts.refuses(facts.request_type, facts.language)
        if refused is None:
            return Route(recipient.id, came_by, "the channel the request came by")
        came_by_refused = f"{describe(came_by)} {refused}"
        refusals.append(came_by_refused)
    for channel in recipient.channels:
        if facts.override is not None and channel.kind != facts.override:
            continue
        if came_by_refused is not None and channel == came_by:
            continue  # judged above
        refused = channel.accepts.refuses(facts.request_type, facts.language)
        if refused is not None:
            refusals.append(f"{describe(channel)} {refused}")
            continue
        if came_by is not None and channel != came_by:
            if came_by_refused is not None:
                why = f"the channel the request came by does not take it: {came_by_refused}"
                reason = f"that channel does not take it ({came_by_refused})"
            else:
                why = f"the sender asked for {channel.kind} instead of {describe(came_by)}"
                reason = f"the sender chose the {channel.kind} channel"
            return Route(recipient.id, channel, why, notice_by=came_by, notice_reason=reason)
        why = "the sender's choice" if facts.override else "the recipient's preferred channel"
        return Route(recipient.id, channel, why)
    if facts.override is not None and not any(c.kind == facts.override for c in recipient.channels):
        return NoRoute(f"{recipient.id} cannot be reached by {facts.override}")
    detail = "; ".join(refusals) or "it lists no channel"
    return NoRoute(f"no channel of {recipient.id} takes this message: {detail}")
