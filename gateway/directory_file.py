"""Reading the authority directory file: its TOML tables, checked, as the directory's types.

``parse_directory`` takes what ``tomllib`` read from the file (see
gateway.authorities for its shape and docs/operations.md for every key) and
gives the authorities and peer gateways it defines. Every table is checked
as it is read: an unknown key, a missing or mistyped value, an id or digest
that is not well formed, each is an AuthorityDirectoryError that names the
table and key (``authority[2].channel[0]: ...``). Relative paths are taken
from the directory file's own folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.authorities import Authority, AuthorityDirectoryError, SignerConstraint
from gateway.channels import (
    CHANNEL_KINDS,
    Accepts,
    Channel,
    EmailChannel,
    GatewayChannel,
    PeerGateway,
    SftpChannel,
)

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


def parse_directory(
    data: Mapping[str, object], base: Path
) -> tuple[list[Authority], list[PeerGateway]]:
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
