"""Who may send what to whom: the checks of a verified envelope's parties.

A submission from an authority must name that authority as sender and be
signed by one of its signers. A message from outside (a peer gateway, a
polled e-mail or SFTP channel) must come from an authority that origin may
speak for, signed by that authority's signer, for an authority served here;
it also records which of the sender's channels it came by, so the reply can
go back the same way. Each check raises ``Refused`` with the element at fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.authorities import Authority, AuthorityDirectory
from gateway.channels import Channel, EmailChannel, GatewayChannel, SftpChannel
from gateway.envelope import Envelope
from gateway.intake_checks import Refused
from gateway.intake_records import Origin
from gateway.routing import channel_key

_SENDER = "/Envelope/Header/Sender/AuthorityId"


def check_sender(
    directory: AuthorityDirectory, authority: Authority, envelope: Envelope, cert: Any, report: Any
) -> None:
    """The authenticated authority is the envelope's sender and one of its signers signed it."""
    if envelope.sender.id != authority.id:
        raise Refused.one(
            403, "sender-not-authority", "Posting as another authority",
            f"the envelope's sender is {envelope.sender.id}, but the request was "
            f"authenticated as {authority.id}",
            path=_SENDER,
        )  # fmt: skip
    if cert is None or not directory.signer_belongs(authority, cert):
        raise signer_refused(report, authority.id)


def check_inbound(
    directory: AuthorityDirectory, envelope: Envelope, origin: Origin, cert: Any, report: Any
) -> str | None:
    """The sender is one ``origin`` speaks for, signed by its signer; the recipient is ours.

    Returns the routing key of the sender's channel the message came by (None
    when the directory lists no such channel).
    """
    sender_id = envelope.sender.id
    if origin.gateway is not None:
        sender = directory.served_by(origin.gateway, sender_id)
        if sender is None:
            raise Refused.one(
                403, "sender-not-of-peer", "Sender not served by this peer",
                f"the envelope's sender is {sender_id}, which the authority directory "
                f"does not list as reached through gateway {origin.gateway}",
                path=_SENDER,
            )  # fmt: skip
    else:
        sender = directory.get(sender_id)
        if sender is None or sender_id != origin.vouched_sender:
            raise Refused.one(
                403, "sender-not-of-channel", "Sender does not match the channel",
                f"the envelope's sender is {sender_id}, but it came by the {origin.kind} "
                f"channel of {origin.vouched_sender}",
                path=_SENDER,
            )  # fmt: skip
    if cert is None or not directory.signer_belongs(sender, cert):
        raise signer_refused(report, sender_id)
    recipient_id = envelope.recipient.id
    if directory.local(recipient_id) is None:
        raise Refused.one(
            422, "recipient-not-served", "Recipient not served here",
            f"the recipient {recipient_id} is not an authority this gateway serves",
            path="/Envelope/Header/Recipient/AuthorityId",
        )  # fmt: skip
    came_by = arrival_channel(sender.channels, origin)
    return channel_key(came_by) if came_by is not None else None


def signer_refused(report: Any, authority_id: str) -> Refused:
    signer = report.signatures[0].signer if report.signatures else "unknown"
    return Refused.one(
        403, "signer-not-of-authority", "Signer not bound to the authority",
        f"the envelope is signed by {signer}, which the authority directory does not "
        f"list as a signer for {authority_id}",
        path="/Envelope/Signature",
    )  # fmt: skip


def arrival_channel(channels: Iterable[Channel], origin: Origin) -> Channel | None:
    """The sender's channel the message came by, as the directory lists it."""
    for channel in channels:
        if origin.gateway is not None:
            if isinstance(channel, GatewayChannel) and channel.gateway == origin.gateway:
                return channel
        elif (origin.kind == "email" and isinstance(channel, EmailChannel)) or (
            origin.kind == "sftp" and isinstance(channel, SftpChannel)
        ):
            return channel
    return None
