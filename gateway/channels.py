"""The channels an authority can be reached by, and what each accepts: plain data, no I/O.

An authority in the directory that is not served by this gateway lists one
or more channels (DESIGN.md, Parts; issue 5):

    [[authority.channel]]
    kind = "gateway"                      # a peer Rogatory / e-CODEX-style gateway
    gateway = "gw-ar"                     # a [[gateway]] table of the directory

    [[authority.channel]]
    kind = "email"
    address = "mla@example.org"
    smime_certificate = "certs/ar-mj-smime.pem"   # encrypt to it; inbound mail signed by it

    [[authority.channel]]
    kind = "sftp"
    host = "sftp.example.org"
    port = 22
    user = "rogatory"
    folder = "/inbox"                     # where we upload
    inbound_folder = "/outbox"            # where we poll for what they send (optional)
    host_key = "ssh-ed25519 AAAA..."      # pinned; any other key is refused

Each channel may narrow what it accepts (``request_types``, ``languages``);
an empty tuple accepts everything. The order is the authority's preference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ChannelKind = Literal["gateway", "email", "sftp"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("gateway", "email", "sftp")


@dataclass(frozen=True)
class Accepts:
    """What a channel takes; an empty tuple means any."""

    request_types: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    def refuses(self, request_type: str | None, language: str | None) -> str | None:
        """Why this channel does not take such a message, or None if it does."""
        if self.request_types and request_type not in self.request_types:
            return f"takes only {', '.join(self.request_types)} requests, not {request_type}"
        if self.languages and language not in self.languages:
            return f"takes only messages in {', '.join(self.languages)}, not {language}"
        return None


@dataclass(frozen=True)
class PeerGateway:
    """Another gateway: where its intake is, how its TLS and its evidences are recognised."""

    id: str
    url: str  # base URL of its API, e.g. https://gw-ar.example:8443
    # Its TLS server certificate chains to this CA file (PEM), and may be pinned too.
    tls_ca: Path | None = None
    tls_certificates: frozenset[str] = frozenset()  # "sha256:<hex>" pins of its server cert
    # The TLS client certificates it presents when it posts to us.
    client_certificates: frozenset[str] = frozenset()
    # The certificates it signs evidences with (fingerprints), or a subject organization id.
    evidence_signers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GatewayChannel:
    gateway: str  # PeerGateway.id
    accepts: Accepts = field(default_factory=Accepts)
    kind: Literal["gateway"] = "gateway"


@dataclass(frozen=True)
class EmailChannel:
    address: str
    smime_certificate: Path | None = (
        None  # PEM; encrypt to it, and inbound mail must be signed by it
    )
    accepts: Accepts = field(default_factory=Accepts)
    kind: Literal["email"] = "email"


@dataclass(frozen=True)
class SftpChannel:
    host: str
    user: str
    folder: str
    host_key: str  # "ssh-ed25519 AAAA..." as in known_hosts, without the host name
    port: int = 22
    inbound_folder: str | None = None
    accepts: Accepts = field(default_factory=Accepts)
    kind: Literal["sftp"] = "sftp"


Channel = GatewayChannel | EmailChannel | SftpChannel


def describe(channel: Channel) -> str:
    """A short name for logs, audit entries and status reasons."""
    if isinstance(channel, GatewayChannel):
        return f"gateway {channel.gateway}"
    if isinstance(channel, EmailChannel):
        return f"e-mail {channel.address}"
    return f"sftp {channel.user}@{channel.host}:{channel.port}{channel.folder}"
