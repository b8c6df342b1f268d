"""Routing: which channel an accepted message leaves by, and why (gateway.routing, channels)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.authorities import Authority
from gateway.channels import (
    Accepts,
    Channel,
    EmailChannel,
    GatewayChannel,
    SftpChannel,
    describe,
)
from gateway.routing import Facts, NoRoute, Route, channel_key, decide, find_channel

MLA = "mutual-legal-assistance"

GW = GatewayChannel("gw-ar")
GW_BACKUP = GatewayChannel("gw-ar-backup")
MAIL = EmailChannel("mla@mpf.example.ar", Path("certs/ar-smime.pem"))
MAIL_ES = EmailChannel("es@mpf.example.ar", accepts=Accepts(languages=("es",)))
SFTP = SftpChannel(
    "sftp.mpf.example.ar", "rogatory", "/inbox", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", port=2222
)
SFTP_MLA = replace(SFTP, folder="/mla", accepts=Accepts(request_types=(MLA,)))


def remote(*channels: Channel) -> Authority:
    return Authority("AR-MPF", "AR", "Ministerio Público Fiscal", channels=channels)


def facts(**kwargs: str | None) -> Facts:
    return Facts("AR-MPF", **{"request_type": MLA, "language": "es", **kwargs})


def route(result: Route | NoRoute) -> Route:
    assert isinstance(result, Route), result
    return result


def no_route(result: Route | NoRoute) -> str:
    assert isinstance(result, NoRoute), result
    return result.reason


# --- what a channel accepts


def test_an_empty_accepts_takes_everything() -> None:
    assert Accepts().refuses(MLA, "es") is None
    assert Accepts().refuses(None, None) is None


def test_accepts_narrows_by_request_type_then_language() -> None:
    accepts = Accepts(request_types=(MLA, "extradition"), languages=("es", "pt"))
    assert accepts.refuses("extradition", "pt") is None
    assert accepts.refuses("transfer-of-proceedings", "es") == (
        "takes only mutual-legal-assistance, extradition requests, not transfer-of-proceedings"
    )
    assert accepts.refuses(MLA, "en") == "takes only messages in es, pt, not en"
    # A message that says nothing of its type or language is not taken by a narrowed channel.
    assert accepts.refuses(None, "es") is not None
    assert accepts.refuses(MLA, None) is not None
    # Both refuse: the request type is named.
    assert "requests" in (accepts.refuses("extradition-x", "en") or "")


# --- the recipient's preference


@pytest.mark.parametrize("channels", [(GW, MAIL, SFTP), (MAIL, GW, SFTP), (SFTP, MAIL, GW)])
def test_the_first_listed_channel_is_preferred(channels: tuple[Channel, ...]) -> None:
    chosen = route(decide(facts(), remote(*channels)))
    assert chosen == Route("AR-MPF", channels[0], "the recipient's preferred channel")
    assert chosen.notice_by is None
    assert chosen.key() == channel_key(channels[0])


def test_a_channel_that_does_not_take_the_message_is_passed_over() -> None:
    recipient = remote(SFTP_MLA, MAIL_ES, MAIL)
    assert route(decide(facts(), recipient)).channel == SFTP_MLA
    assert route(decide(facts(request_type="extradition"), recipient)).channel == MAIL_ES
    assert route(decide(facts(request_type="extradition", language="en"), recipient)).channel == (
        MAIL
    )


def test_no_channel_taking_it_fails_with_every_refusal() -> None:
    reason = no_route(
        decide(facts(request_type="extradition", language="en"), remote(SFTP_MLA, MAIL_ES))
    )
    assert reason == (
        "no channel of AR-MPF takes this message: "
        "sftp rogatory@sftp.mpf.example.ar:2222/mla takes only mutual-legal-assistance "
        "requests, not extradition; "
        "e-mail es@mpf.example.ar takes only messages in es, not en"
    )


# --- the sender's choice (override)


def test_an_override_takes_the_first_channel_of_that_kind_that_takes_it() -> None:
    recipient = remote(GW, MAIL_ES, MAIL, SFTP)
    assert route(decide(facts(override="email"), recipient)) == Route(
        "AR-MPF", MAIL_ES, "the sender's choice"
    )
    english = route(decide(facts(override="email", language="en"), recipient))
    assert (english.channel, english.why, english.notice_by) == (MAIL, "the sender's choice", None)
    assert route(decide(facts(override="sftp"), recipient)).channel == SFTP
    assert route(decide(facts(override="gateway"), recipient)).channel == GW


def test_an_override_to_a_kind_the_recipient_lacks_names_it() -> None:
    reason = no_route(decide(facts(override="sftp"), remote(GW, MAIL)))
    assert reason == "AR-MPF cannot be reached by sftp"


def test_an_override_whose_channels_all_refuse_lists_only_those() -> None:
    reason = no_route(decide(facts(override="email", language="en"), remote(GW, MAIL_ES)))
    assert reason == (
        "no channel of AR-MPF takes this message: "
        "e-mail es@mpf.example.ar takes only messages in es, not en"
    )


@pytest.mark.parametrize("kind", ["fax", "Email", ""])
def test_an_unknown_override_kind_is_no_route(kind: str) -> None:
    reason = no_route(decide(facts(override=kind), remote(GW, MAIL, SFTP)))
    assert reason == f"no channel of kind {kind!r}; kinds are gateway, email, sftp"


# --- replies: the channel the request came by


def test_a_reply_goes_back_by_the_channel_the_request_came_by() -> None:
    recipient = remote(MAIL, SFTP, GW)  # the gateway is not the preferred channel
    reply = route(decide(facts(arrived_via=channel_key(GW)), recipient))
    assert reply == Route("AR-MPF", GW, "the channel the request came by")
    assert reply.notice_by is None


def test_a_reply_finds_its_channel_by_key_even_when_its_settings_changed() -> None:
    came_by = channel_key(SFTP)
    moved_key = replace(SFTP, host_key="ssh-ed25519 AAAAnewkey", inbound_folder="/out")
    reply = route(decide(facts(arrived_via=came_by), remote(MAIL, moved_key)))
    # The stored key names the channel; its current settings come from the directory.
    assert reply.channel == moved_key and reply.why == "the channel the request came by"


def test_a_reply_asking_for_the_same_kind_stays_on_its_channel() -> None:
    recipient = remote(GW, GW_BACKUP, MAIL)
    reply = route(decide(facts(arrived_via=channel_key(GW_BACKUP), override="gateway"), recipient))
    assert reply == Route("AR-MPF", GW_BACKUP, "the channel the request came by")


def test_a_reply_whose_channel_is_no_longer_listed_takes_the_preferred_one() -> None:
    reply = route(decide(facts(arrived_via=channel_key(GW_BACKUP)), remote(MAIL, GW)))
    assert reply == Route("AR-MPF", MAIL, "the recipient's preferred channel")
    assert reply.notice_by is None


def test_an_override_moving_a_reply_off_its_channel_gives_notice_there() -> None:
    recipient = remote(GW, SFTP, MAIL)
    reply = route(decide(facts(arrived_via=channel_key(GW), override="email"), recipient))
    assert reply.channel == MAIL
    assert reply.notice_by == GW
    assert reply.why == "the sender asked for email instead of gateway gw-ar"
    assert reply.key() == channel_key(MAIL)


def test_an_override_moving_a_reply_to_a_kind_the_recipient_lacks_names_it() -> None:
    reason = no_route(decide(facts(arrived_via=channel_key(GW), override="sftp"), remote(GW, MAIL)))
    assert reason == "AR-MPF cannot be reached by sftp"


def test_a_reply_its_channel_refuses_leaves_by_another_and_says_why() -> None:
    gw_es = replace(GW, accepts=Accepts(languages=("es",)))
    reply = route(decide(facts(arrived_via=channel_key(gw_es), language="en"), remote(gw_es, MAIL)))
    assert reply.channel == MAIL and reply.notice_by == gw_es
    # The sender asked for nothing: the reason must not say so.
    assert "sender" not in reply.why
    assert reply.why == (
        "the channel the request came by does not take it: "
        "gateway gw-ar takes only messages in es, not en"
    )


def test_a_reply_no_channel_takes_names_each_refusal_once() -> None:
    gw_es = replace(GW, accepts=Accepts(languages=("es",)))
    reason = no_route(
        decide(facts(arrived_via=channel_key(gw_es), language="en"), remote(gw_es, MAIL_ES))
    )
    assert reason == (
        "no channel of AR-MPF takes this message: "
        "gateway gw-ar takes only messages in es, not en; "
        "e-mail es@mpf.example.ar takes only messages in es, not en"
    )


# --- recipients routing does not handle


def test_a_recipient_not_in_the_directory_is_no_route() -> None:
    reason = no_route(decide(Facts("XX-NONE"), None))
    assert reason == "the recipient XX-NONE is not in the authority directory"


def test_a_local_recipient_is_not_routed() -> None:
    with pytest.raises(ValueError, match="local recipient"):
        decide(facts(), Authority("AR-MPF", "AR", "served here"))


# --- channel keys


def test_a_channel_key_is_canonical_json_of_what_identifies_the_channel() -> None:
    assert channel_key(GW) == '{"gateway":"gw-ar","kind":"gateway"}'
    assert channel_key(MAIL) == '{"address":"mla@mpf.example.ar","kind":"email"}'
    assert json.loads(channel_key(SFTP)) == {
        "kind": "sftp",
        "host": "sftp.mpf.example.ar",
        "port": 2222,
        "user": "rogatory",
        "folder": "/inbox",
    }
    # No credentials and no narrowing in the key: they stay in the directory.
    assert channel_key(replace(MAIL, smime_certificate=None, accepts=MAIL_ES.accepts)) == (
        channel_key(MAIL)
    )
    assert channel_key(replace(SFTP, host_key="ssh-rsa AAAAother")) == channel_key(SFTP)
    keys = {channel_key(c) for c in (GW, GW_BACKUP, MAIL, MAIL_ES, SFTP, SFTP_MLA)}
    assert len(keys) == 6
    assert len({channel_key(replace(SFTP, port=22)), channel_key(SFTP)}) == 2


def test_find_channel_returns_the_listed_channel_or_none() -> None:
    recipient = remote(GW, MAIL, SFTP)
    for channel in recipient.channels:
        assert find_channel(recipient, channel_key(channel)) is channel
    assert find_channel(recipient, channel_key(GW_BACKUP)) is None
    assert find_channel(recipient, channel_key(replace(SFTP, user="other"))) is None
    assert find_channel(recipient, "not json") is None


def test_describe_names_each_kind() -> None:
    assert describe(GW) == "gateway gw-ar"
    assert describe(MAIL) == "e-mail mla@mpf.example.ar"
    assert describe(SFTP) == "sftp rogatory@sftp.mpf.example.ar:2222/inbox"
