"""The authority directory: who may call the gateway, and whose signatures count for whom.

A TOML file the operator edits (read by gateway.directory_file), one
``[[authority]]`` table per central authority (see docs/operations.md):

    [[authority]]
    id = "ES-MJ"
    country = "ES"
    name = "Ministerio de Justicia"
    signing_certificates = ["sha256:<hex of the DER certificate>"]
    signer_constraints = [{ issuer = "CN=...,O=...,C=ES", organization_identifier = "ES-MJ" }]
    api_tokens = ["sha256:<hex of the token>"]
    tls_client_certificates = ["sha256:<hex of the DER certificate>"]

An authority served elsewhere has no credentials here but one or more
``[[authority.channel]]`` tables (gateway.channels) saying how to reach it;
a peer gateway is a ``[[gateway]]`` table:

    [[gateway]]
    id = "gw-ar"
    url = "https://gw-ar.example:8443"
    tls_ca = "pki/root-ca.pem"             # its TLS server certificate chains to this
    client_certificates = ["sha256:..."]   # what it presents when it posts to us
    evidence_signers = ["sha256:..."]      # what it signs its evidences with

Tokens are stored as SHA-256 digests only. A token and a TLS client
certificate each authenticate exactly one authority. `signer_belongs` only
binds a signer to an authority; the trust engine validates its chain first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from gateway.channels import (
    Channel,
    GatewayChannel,
    PeerGateway,
)
from signing.errors import RogatoryError


class AuthorityDirectoryError(RogatoryError):
    """The authority directory file is malformed or contradicts itself."""


@dataclass(frozen=True)
class SignerConstraint:
    """Certificates from `issuer` whose subject has this organizationIdentifier or DN."""

    issuer: x509.Name
    organization_identifier: str | None = None
    subject: x509.Name | None = None

    def matches(self, cert: x509.Certificate) -> bool:
        if cert.issuer != self.issuer:
            return False
        if self.subject is not None and cert.subject != self.subject:
            return False
        if self.organization_identifier is not None:
            found = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
            # Exactly one value: a subject naming two organizations belongs to neither.
            if [a.value for a in found] != [self.organization_identifier]:
                return False
        return True


@dataclass(frozen=True)
class Authority:
    id: str
    country: str
    name: str
    signing_certificates: frozenset[str] = frozenset()  # "sha256:<hex>" of the DER
    signer_constraints: tuple[SignerConstraint, ...] = ()
    api_tokens: frozenset[str] = frozenset()  # "sha256:<hex>" of the token
    tls_client_certificates: frozenset[str] = frozenset()
    channels: tuple[Channel, ...] = ()  # how to reach it; none: it is served by this gateway

    @property
    def local(self) -> bool:
        """Served by this gateway: its messages are held here for it to collect."""
        return not self.channels


def hash_token(token: str) -> str:
    """The form a token is stored in: ``sha256:<hex>`` of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh API token (256 random bits), shown once to the operator, stored hashed."""
    return secrets.token_urlsafe(32)


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER encoding."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


class AuthorityDirectory:
    """The loaded directory: lookups by id, token and client certificate."""

    def __init__(
        self, authorities: Sequence[Authority], gateways: Sequence[PeerGateway] = ()
    ) -> None:
        self._by_id: dict[str, Authority] = {}
        self._gateways: dict[str, PeerGateway] = {}
        self._by_peer_cert: dict[str, PeerGateway] = {}
        for gateway in gateways:
            if gateway.id in self._gateways:
                raise AuthorityDirectoryError(f"gateway id {gateway.id!r} appears twice")
            self._gateways[gateway.id] = gateway
            for cert in sorted(gateway.client_certificates):
                if cert in self._by_peer_cert:
                    raise AuthorityDirectoryError(
                        f"gateway {gateway.id!r}: client_certificates: {cert} is already "
                        f"bound to gateway {self._by_peer_cert[cert].id!r}"
                    )
                self._by_peer_cert[cert] = gateway
        self._by_client_cert: dict[str, Authority] = {}
        self._tokens: list[tuple[bytes, Authority]] = []
        token_owner: dict[str, str] = {}
        for authority in authorities:
            if authority.id in self._by_id:
                raise AuthorityDirectoryError(f"authority id {authority.id!r} appears twice")
            self._by_id[authority.id] = authority
            for token in sorted(authority.api_tokens):
                if token in token_owner:
                    raise AuthorityDirectoryError(
                        f"authority {authority.id!r}: api_tokens: a token is already bound to "
                        f"{token_owner[token]!r}; a token authenticates exactly one authority"
                    )
                token_owner[token] = authority.id
                self._tokens.append((bytes.fromhex(token.removeprefix("sha256:")), authority))
            for cert in sorted(authority.tls_client_certificates):
                if cert in self._by_client_cert:
                    raise AuthorityDirectoryError(
                        f"authority {authority.id!r}: tls_client_certificates: {cert} is "
                        f"already bound to {self._by_client_cert[cert].id!r}"
                    )
                if cert in self._by_peer_cert:
                    raise AuthorityDirectoryError(
                        f"authority {authority.id!r}: tls_client_certificates: {cert} is "
                        f"already bound to gateway {self._by_peer_cert[cert].id!r}"
                    )
                self._by_client_cert[cert] = authority
            for channel in authority.channels:
                if isinstance(channel, GatewayChannel) and channel.gateway not in self._gateways:
                    raise AuthorityDirectoryError(
                        f"authority {authority.id!r}: a channel names gateway "
                        f"{channel.gateway!r}, which no [[gateway]] table defines"
                    )
            if authority.channels and (authority.api_tokens or authority.tls_client_certificates):
                raise AuthorityDirectoryError(
                    f"authority {authority.id!r} has channels (it is served elsewhere) and API "
                    "credentials (it is served here); give one or the other"
                )

    @classmethod
    def load(cls, path: Path) -> AuthorityDirectory:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthorityDirectoryError(
                f"cannot read the authority directory {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise AuthorityDirectoryError(f"{path}: not UTF-8 text") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AuthorityDirectoryError(f"{path}: not valid TOML: {exc}") from None
        try:
            from gateway.directory_file import parse_directory  # it builds this module's types

            authorities, gateways = parse_directory(data, Path(path).parent)
            return cls(authorities, gateways)
        except AuthorityDirectoryError as exc:
            raise AuthorityDirectoryError(f"{path}: {exc}") from None

    def __iter__(self) -> Iterator[Authority]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, authority_id: str) -> Authority | None:
        return self._by_id.get(authority_id)

    def local(self, authority_id: str) -> Authority | None:
        """The authority if this gateway serves it (holds its messages), else None."""
        found = self._by_id.get(authority_id)
        return found if found is not None and found.local else None

    def gateway(self, gateway_id: str) -> PeerGateway | None:
        return self._gateways.get(gateway_id)

    @property
    def gateways(self) -> tuple[PeerGateway, ...]:
        return tuple(self._gateways.values())

    def authenticate_peer(self, cert: x509.Certificate) -> PeerGateway | None:
        """The peer gateway this exact TLS client certificate is bound to, or None."""
        return self._by_peer_cert.get(fingerprint(cert))

    def served_by(self, gateway_id: str, authority_id: str) -> Authority | None:
        """The authority if it is reached through peer gateway ``gateway_id``, else None."""
        found = self._by_id.get(authority_id)
        if found is None:
            return None
        if any(isinstance(c, GatewayChannel) and c.gateway == gateway_id for c in found.channels):
            return found
        return None

    def authenticate_token(self, token: str) -> Authority | None:
        """The authority this token is bound to, or None; compares every digest in full."""
        if not token:
            return None
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for stored, authority in self._tokens:
            if hmac.compare_digest(stored, digest):
                found = authority
        return found

    def authenticate_client_certificate(self, cert: x509.Certificate) -> Authority | None:
        """The authority this exact TLS client certificate is bound to, or None.

        The TLS layer has already checked the certificate chains to the client CA.
        """
        return self._by_client_cert.get(fingerprint(cert))

    def signer_belongs(self, authority: Authority, cert: x509.Certificate) -> bool:
        """Whether `cert` may sign envelopes for `authority` (as this directory lists it)."""
        if self._by_id.get(authority.id) != authority:
            return False
        if fingerprint(cert) in authority.signing_certificates:
            return True
        return any(c.matches(cert) for c in authority.signer_constraints)
