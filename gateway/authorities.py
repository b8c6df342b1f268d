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
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

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
}
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

    def __init__(self, authorities: Sequence[Authority]) -> None:
        self._by_id: dict[str, Authority] = {}
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
                self._by_client_cert[cert] = authority

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
            return cls(_parse(data))
        except AuthorityDirectoryError as exc:
            raise AuthorityDirectoryError(f"{path}: {exc}") from None

    def __iter__(self) -> Iterator[Authority]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, authority_id: str) -> Authority | None:
        return self._by_id.get(authority_id)

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


def _parse(data: Mapping[str, object]) -> list[Authority]:
    unknown = set(data) - {"authority"}
    if unknown:
        raise AuthorityDirectoryError(
            f"unknown top-level key {sorted(unknown)[0]!r}; expected [[authority]] tables"
        )
    tables = data.get("authority", [])
    if not isinstance(tables, list):
        raise AuthorityDirectoryError("'authority' must be an array of tables ([[authority]])")
    return [_authority(table, f"authority[{i}]") for i, table in enumerate(tables)]


def _authority(table: object, where: str) -> Authority:
    if not isinstance(table, dict):
        raise AuthorityDirectoryError(f"{where}: expected a table")
    if isinstance(table.get("id"), str):
        where = f"{where} (id {table['id']!r})"
    unknown = set(table) - _AUTHORITY_KEYS
    if unknown:
        raise AuthorityDirectoryError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; "
            f"known keys: {', '.join(sorted(_AUTHORITY_KEYS))}"
        )
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
    unknown = set(item) - _CONSTRAINT_KEYS
    if unknown:
        raise AuthorityDirectoryError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; "
            f"known keys: {', '.join(sorted(_CONSTRAINT_KEYS))}"
        )
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
