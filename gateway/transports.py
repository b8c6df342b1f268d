"""The real adapters, built from the settings and the directory (see adapters/).

The dispatcher asks for an adapter per channel; peer adapters are kept per
gateway (they hold only a TLS context), the others are built per send so a
changed directory or key file takes effect at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509

from adapters.base import Adapter, PermanentError, Receipt
from adapters.peer import PeerAdapter
from gateway.authorities import AuthorityDirectory, fingerprint
from gateway.channels import Channel, EmailChannel, GatewayChannel, PeerGateway, SftpChannel
from gateway.poller import PullSource
from gateway.settings import Settings
from signing.keys import load_signer

if TYPE_CHECKING:
    from adapters.email import EmailAdapter, ImapConfig, SmtpConfig
    from adapters.sftp import SftpAdapter


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
        if isinstance(channel, EmailChannel):
            return email_adapter(self.settings, self.directory, channel=channel)
        return sftp_adapter(self.settings, channel, authority_id="")

    def send_evidence(self, peer: PeerGateway, message_id: str, evidence: bytes) -> Receipt:
        return self.peer(peer).send_evidence(message_id, evidence)

    def close(self) -> None:
        with self._lock:
            peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            peer.close()


def pull_sources(settings: Settings, directory: AuthorityDirectory) -> list[PullSource]:
    """The pull channels to poll: the gateway's mailbox, each authority's inbound SFTP drop."""
    sources: list[PullSource] = []
    if settings.imap_url:
        imap = _imap_config(settings)
        mailbox = email_adapter(settings, directory, imap=imap)
        sources.append(PullSource("email", f"{imap.user}@{imap.host}/{imap.mailbox}", mailbox))
    for authority in directory:
        for channel in authority.channels:
            if isinstance(channel, SftpChannel) and channel.inbound_folder:
                drop = sftp_adapter(settings, channel, authority_id=authority.id)
                sources.append(PullSource("sftp", authority.id, drop))
    return sources


def sftp_adapter(settings: Settings, channel: SftpChannel, *, authority_id: str) -> SftpAdapter:
    from adapters.sftp import SftpAdapter

    if settings.sftp_key is None:
        raise PermanentError("no SSH client key for the SFTP channel: set sftp_key")
    return SftpAdapter(
        channel, client_key=settings.sftp_key, authority_id=authority_id,
        max_incoming_bytes=min(settings.max_body_bytes, 256 * 1024 * 1024),
        max_incoming_files=settings.max_attachments + 1,
    )  # fmt: skip


def email_adapter(
    settings: Settings,
    directory: AuthorityDirectory,
    *,
    channel: EmailChannel | None = None,
    imap: ImapConfig | None = None,
) -> EmailAdapter:
    from adapters.email import EmailAdapter

    from .verification import build_engine

    key = settings.smime_key or settings.signing_key
    cert = settings.smime_cert or settings.signing_cert
    if key is None or cert is None:
        raise PermanentError("no S/MIME identity: set smime_key and smime_cert")
    chain = [p.read_bytes() for p in settings.signing_chain] if not settings.smime_cert else []
    signer = load_signer(key.read_bytes(), cert.read_bytes(), chain)
    engine = build_engine(settings.trust_anchors, revocation=settings.revocation)
    if engine is None:
        raise PermanentError("the e-mail channel needs trust anchors to check S/MIME signatures")
    smtp = _smtp_config(settings) if channel is not None else None
    if channel is not None and smtp is None:
        raise PermanentError(f"no SMTP server to send to {channel.address}: set smtp_url")
    return EmailAdapter(
        signer=signer, engine=engine, channel=channel, smtp=smtp, imap=imap,
        sender_for=_smime_senders(directory),
    )  # fmt: skip


def _smime_senders(directory: AuthorityDirectory) -> Callable[[x509.Certificate], str | None]:
    """Which authority an S/MIME signing certificate speaks for: the one whose e-mail
    channel names exactly that certificate."""
    owners: dict[str, str] = {}
    for authority in directory:
        for channel in authority.channels:
            if isinstance(channel, EmailChannel) and channel.smime_certificate is not None:
                try:
                    pem = channel.smime_certificate.read_bytes()
                except OSError:
                    continue
                for cert in x509.load_pem_x509_certificates(pem):
                    owners[fingerprint(cert)] = authority.id

    def sender_for(cert: x509.Certificate) -> str | None:
        return owners.get(fingerprint(cert))

    return sender_for


def _smtp_config(settings: Settings) -> SmtpConfig | None:
    from adapters.email import SmtpConfig

    if not settings.smtp_url:
        return None
    url = urlsplit(settings.smtp_url)
    query = parse_qs(url.query)
    implicit = url.scheme == "smtps"
    return SmtpConfig(
        host=url.hostname or "127.0.0.1",
        port=url.port or (465 if implicit else 25),
        from_address=settings.mail_from or f"rogatory@{url.hostname}",
        ssl=implicit, starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        user=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        ca_file=settings.mail_ca_file,
    )  # fmt: skip


def _imap_config(settings: Settings) -> ImapConfig:
    from adapters.email import ImapConfig

    url = urlsplit(settings.imap_url)
    query = parse_qs(url.query)
    implicit = url.scheme == "imaps"
    if not url.username or url.password is None:
        raise PermanentError("imap_url must name a user and password: imaps://user:pw@host/INBOX")
    return ImapConfig(
        host=url.hostname or "127.0.0.1", user=unquote(url.username),
        password=unquote(url.password), port=url.port or (993 if implicit else 143),
        ssl=implicit, starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        mailbox=unquote(url.path.lstrip("/")) or "INBOX", ca_file=settings.mail_ca_file,
    )  # fmt: skip
