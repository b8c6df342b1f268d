"""The real adapters, built from the settings and the directory (see adapters/).

The dispatcher asks for an adapter per channel; peer adapters are kept per
gateway (they hold only a TLS context), the others are built per send so a
changed directory or key file takes effect at once.
"""

from __future__ import annotations

import threading

from adapters.base import Adapter, PermanentError, Receipt
from adapters.peer import PeerAdapter
from gateway.authorities import AuthorityDirectory
from gateway.channels import Channel, GatewayChannel, PeerGateway
from gateway.poller import PullSource
from gateway.settings import Settings


class GatewayTransports:
    def __init__(self, settings: Settings, directory: AuthorityDirectory) -> None:
        self.settings = settings
        self.directory = directory
        self._peers: dict[str, PeerAdapter] = {}
        self._lock = threading.Lock()

    def peer(self, gateway: PeerGateway) -> PeerAdapter:
        with self._lock:
            found = self._peers.get(gateway.id)
            if found is None or found.peer != gateway:
                cert, key = self.settings.tls_cert, self.settings.tls_key
                if cert is None or key is None:
                    raise PermanentError(
                        "the gateway has no TLS certificate and key (tls_cert, tls_key) "
                        f"to present to gateway {gateway.id}"
                    )
                found = PeerAdapter(gateway, client_cert=cert, client_key=key)
                self._peers[gateway.id] = found
            return found

    def adapter(self, channel: Channel) -> Adapter:
        if isinstance(channel, GatewayChannel):
            gateway = self.directory.gateway(channel.gateway)
            if gateway is None:
                raise PermanentError(f"gateway {channel.gateway} is not in the directory")
            return self.peer(gateway)
        raise PermanentError(f"the {channel.kind} channel is not configured on this gateway")

    def send_evidence(self, peer: PeerGateway, message_id: str, evidence: bytes) -> Receipt:
        return self.peer(peer).send_evidence(message_id, evidence)

    def close(self) -> None:
        with self._lock:
            peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            peer.close()


def pull_sources(settings: Settings, directory: AuthorityDirectory) -> list[PullSource]:
    """The pull channels to poll: the gateway's mailbox, each authority's inbound SFTP drop."""
    return []
