"""The authority directory: who may call the gateway, and whose signatures count for whom.

A TOML file the operator edits, one ``[[authority]]`` table per central
authority (see docs/operations.md):

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
import re
import secrets
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from gateway.channels import (
    CHANNEL_KINDS,
    Accepts,
    Channel,
    EmailChannel,
    GatewayChannel,
    PeerGateway,
    SftpChannel,
)
from signing.errors import RogatoryError

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_AUTHORITY_KEYS = {
    "id",
    "country",
    "name",
    "signing_certificates",
    "signer_constraints",
    "api_tokens",
    "tls_client_certificates",
    "channel",
}
_GATEWAY_KEYS = {
    "id",
    "url",
    "tls_ca",
    "tls_certificates",
    "client_certificates",
    "evidence_signers",
}
_CHANNEL_KEYS: dict[str, set[str]] = {
    "gateway": {"gateway"},
    "email": {"address", "smime_certificate"},
    "sftp": {"host", "port", "user", "folder", "inbound_folder", "host_key"},
}
_ACCEPT_KEYS = {"kind", "request_types", "languages"}
_CONSTRAINT_KEYS = {"issuer", "organization_identifier", "subject"}
# Attribute names RFC 4514 parsing does not know by default (dotted OIDs work too).
_DN_NAMES = {
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "serialNumber": NameOID.SERIAL_NUMBER,
}


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
            authorities, gateways = _parse(data, Path(path).parent)
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


# --- parsing


def _parse(data: Mapping[str, object], base: Path) -> tuple[list[Authority], list[PeerGateway]]:
    unknown = set(data) - {"authority", "gateway"}
    if unknown:
        raise AuthorityDirectoryError(
            f"unknown top-level key {sorted(unknown)[0]!r}; expected [[authority]] "
            "and [[gateway]] tables"
        )
    tables = data.get("authority", [])
    if not isinstance(tables, list):
        raise AuthorityDirectoryError("'authority' must be an array of tables ([[authority]])")
    peers = data.get("gateway", [])
    if not isinstance(peers, list):
        raise AuthorityDirectoryError("'gateway' must be an array of tables ([[gateway]])")
    return (
        [_authority(table, f"authority[{i}]", base) for i, table in enumerate(tables)],
        [_gateway(table, f"gateway[{i}]", base) for i, table in enumerate(peers)],
    )


def _gateway(table: object, where: str, base: Path) -> PeerGateway:
    if not isinstance(table, dict):
        raise AuthorityDirectoryError(f"{where}: expected a table")
    _known(table, _GATEWAY_KEYS, where)
    gateway_id = _string(table, "id", where)
    if not _ID.fullmatch(gateway_id):
        raise AuthorityDirectoryError(f"{where}: id {gateway_id!r} is not a valid id")
    url = _string(table, "url", where)
    if not url.startswith("https://"):
        raise AuthorityDirectoryError(f"{where}: url {url!r} must start with https://")
    tls_ca = table.get("tls_ca")
    if tls_ca is not None and (not isinstance(tls_ca, str) or not tls_ca):
        raise AuthorityDirectoryError(f"{where}: tls_ca must be the path of a PEM file")
    return PeerGateway(
        id=gateway_id,
        url=url.rstrip("/"),
        tls_ca=base / tls_ca if isinstance(tls_ca, str) else None,
        tls_certificates=_digests(table, "tls_certificates", where),
        client_certificates=_digests(table, "client_certificates", where),
        evidence_signers=_digests(table, "evidence_signers", where),
    )


def _known(table: Mapping[str, object], keys: AbstractSet[str], where: str) -> None:
    unknown = set(table) - keys
    if unknown:
        raise AuthorityDirectoryError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: {', '.join(sorted(keys))}"
        )


def _channel(table: object, where: str, base: Path) -> Channel:
    if not isinstance(table, dict):
        raise AuthorityDirectoryError(f"{where}: expected a table")
    kind = table.get("kind")
    if kind not in CHANNEL_KINDS:
        raise AuthorityDirectoryError(
            f"{where}: kind must be one of {', '.join(CHANNEL_KINDS)}, not {kind!r}"
        )
    _known(table, _CHANNEL_KEYS[str(kind)] | _ACCEPT_KEYS, where)
    accepts = Accepts(
        request_types=tuple(_strings(table, "request_types", where)),
        languages=tuple(_strings(table, "languages", where)),
    )
    if kind == "gateway":
        return GatewayChannel(gateway=_string(table, "gateway", where), accepts=accepts)
    if kind == "email":
        address = _string(table, "address", where)
        if "@" not in address or any(c.isspace() or c in '<>",' for c in address):
            raise AuthorityDirectoryError(f"{where}: address {address!r} is not an e-mail address")
        cert = table.get("smime_certificate")
        if cert is not None and (not isinstance(cert, str) or not cert):
            raise AuthorityDirectoryError(f"{where}: smime_certificate must be a PEM file path")
        return EmailChannel(
            address=address,
            smime_certificate=base / cert if isinstance(cert, str) else None,
            accepts=accepts,
        )
    port = table.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise AuthorityDirectoryError(f"{where}: port must be a number from 1 to 65535")
    host_key = _string(table, "host_key", where)
    if len(host_key.split()) < 2:
        raise AuthorityDirectoryError(
            f"{where}: host_key must be '<type> <base64>' as in known_hosts, e.g. "
            "'ssh-ed25519 AAAA...'"
        )
    inbound = table.get("inbound_folder")
    if inbound is not None and (not isinstance(inbound, str) or not inbound):
        raise AuthorityDirectoryError(f"{where}: inbound_folder must be a folder path")
    return SftpChannel(
        host=_string(table, "host", where),
        port=port,
        user=_string(table, "user", where),
        folder=_string(table, "folder", where),
        inbound_folder=inbound if isinstance(inbound, str) else None,
        host_key=" ".join(host_key.split()[:2]),
        accepts=accepts,
    )


def _strings(table: Mapping[str, object], key: str, where: str) -> list[str]:
    items = _list(table, key, where)
    if not all(isinstance(item, str) and item for item in items):
        raise AuthorityDirectoryError(f"{where}: {key} must be an array of strings")
    return [str(item) for item in items]


def _authority(table: object, where: str, base: Path) -> Authority:
    if not isinstance(table, dict):
        raise AuthorityDirectoryError(f"{where}: expected a table")
    if isinstance(table.get("id"), str):
        where = f"{where} (id {table['id']!r})"
    _known(table, _AUTHORITY_KEYS, where)
    authority_id = _string(table, "id", where)
    if not _ID.fullmatch(authority_id):
        raise AuthorityDirectoryError(
            f"{where}: id {authority_id!r} must be letters, digits, '.', '_' or '-'"
        )
    country = _string(table, "country", where)
    if not (len(country) == 2 and country.isascii() and country.isupper()):
        raise AuthorityDirectoryError(
            f"{where}: country {country!r} is not a two-letter ISO 3166 code"
        )
    return Authority(
        id=authority_id,
        country=country,
        name=_string(table, "name", where),
        signing_certificates=_digests(table, "signing_certificates", where),
        signer_constraints=tuple(
            _constraint(item, f"{where}: signer_constraints[{i}]")
            for i, item in enumerate(_list(table, "signer_constraints", where))
        ),
        api_tokens=_digests(table, "api_tokens", where),
        tls_client_certificates=_digests(table, "tls_client_certificates", where),
        channels=tuple(
            _channel(item, f"{where}: channel[{i}]", base)
            for i, item in enumerate(_list(table, "channel", where))
        ),
    )


def _string(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if value is None:
        raise AuthorityDirectoryError(f"{where}: missing key {key!r}")
    if not isinstance(value, str) or not value.strip():
        raise AuthorityDirectoryError(f"{where}: {key} must be a non-empty string")
    return value


def _list(table: Mapping[str, object], key: str, where: str) -> list[object]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise AuthorityDirectoryError(f"{where}: {key} must be an array")
    return value


def _digests(table: Mapping[str, object], key: str, where: str) -> frozenset[str]:
    out = set()
    for i, item in enumerate(_list(table, key, where)):
        digest = _digest(item)
        if digest is None:
            raise AuthorityDirectoryError(
                f"{where}: {key}[{i}] is not 'sha256:' followed by 64 hex digits: {item!r}"
            )
        if digest in out:
            raise AuthorityDirectoryError(f"{where}: {key}[{i}] is listed twice")
        out.add(digest)
    return frozenset(out)


def _digest(item: object) -> str | None:
    """Normalized ``sha256:<lowercase hex>``; accepts OpenSSL's ``AB:CD:...`` spelling."""
    if not isinstance(item, str):
        return None
    algorithm, _, hex_part = item.strip().partition(":")
    text = f"{algorithm.lower()}:{hex_part.replace(':', '').lower()}"
    return text if _DIGEST.fullmatch(text) else None


def _constraint(item: object, where: str) -> SignerConstraint:
    if not isinstance(item, dict):
        raise AuthorityDirectoryError(f"{where}: expected an inline table {{ issuer = ... }}")
    _known(item, _CONSTRAINT_KEYS, where)
    issuer = _name(item, "issuer", where)
    if issuer is None:
        raise AuthorityDirectoryError(f"{where}: missing key 'issuer'")
    org_id = item.get("organization_identifier")
    if org_id is not None and (not isinstance(org_id, str) or not org_id):
        raise AuthorityDirectoryError(f"{where}: organization_identifier must be a string")
    subject = _name(item, "subject", where)
    if org_id is None and subject is None:
        # An issuer alone would let every certificate of that CA sign for this authority.
        raise AuthorityDirectoryError(
            f"{where}: give organization_identifier or subject beside issuer"
        )
    return SignerConstraint(issuer=issuer, organization_identifier=org_id, subject=subject)


def _name(item: Mapping[str, object], key: str, where: str) -> x509.Name | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise AuthorityDirectoryError(f"{where}: {key} must be a distinguished name string")
    try:
        return x509.Name.from_rfc4514_string(value, _DN_NAMES)
    except ValueError:
        raise AuthorityDirectoryError(
            f"{where}: {key} {value!r} is not an RFC 4514 distinguished name "
            "such as 'CN=Signers CA,O=Ministry,C=ES'"
        ) from None
