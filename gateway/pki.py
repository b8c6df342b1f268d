"""The development PKI: a root CA, a signers CA, demo authorities, gateways, a TSA.

`create_dev_pki(DIR)` (behind `rogatory pki init DIR`) writes one folder:

    root-ca.pem            Rogatory Development Root CA (the trust anchor)
    signers-ca.pem         intermediate CA that issues the authorities' signing certs
    ES-MJ.pem .key.pem .p12   one signer per demo authority (AR-MJ, CO-FGN, ...)
    gw-es.pem .key.pem     TLS server+client certs of the demo gateways (gw-ar too)
    tsa.pem .key.pem       the time-stamping unit (EKU timeStamping, critical)
    index.json             every issued serial and its revocation state

Keys are P-256: the same 128-bit strength as RSA-3072, which XAdES, PAdES,
S/MIME and TLS all accept, and fast enough to build a fresh PKI per test.
The root and the infrastructure certificates (gateways, TSA) are issued by
the root; the authorities' certificates by `signers-ca`.

With `crl_url`/`ocsp_url`, every issued certificate names its status source:
`{crl_url}/{issuer}.crl` (one CRL per CA) and `ocsp_url`. The PKI answers
both itself (`crl_der`, `ocsp_response_der`); `tests.servers` serves them.
State lives in the folder only, so `load_dev_pki` sees what another process
issued or revoked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.pki_issue import (
    CA_KEY_USAGE,
    SIGNING_KEY_USAGE,
    PrivateKey,
    Profile,
    Revocation,
    build_cert,
    build_crl,
    build_ocsp_response,
    load_key,
    name,
    new_key,
    write_cert,
    write_p12,
    write_private_key,
)
from signing.errors import RogatoryError
from signing.keys import Signer

ROOT_CA = "root-ca"
SIGNERS_CA = "signers-ca"
TSA = "tsa"
DEV_ORG = "Rogatory Development"
INDEX = "index.json"


@dataclass(frozen=True)
class DemoAuthority:
    id: str
    country: str
    organization: str


DEMO_AUTHORITIES = (
    DemoAuthority("ES-MJ", "ES", "Ministerio de Justicia"),
    DemoAuthority("AR-MJ", "AR", "Ministerio de Justicia y Derechos Humanos"),
    DemoAuthority("CO-FGN", "CO", "Fiscalía General de la Nación"),
    DemoAuthority("PT-PGR", "PT", "Procuradoria-Geral da República"),
    DemoAuthority("MX-FGR", "MX", "Fiscalía General de la República"),
)
DEMO_GATEWAYS = {"gw-es": "ES", "gw-ar": "AR"}


class DevPKIError(RogatoryError):
    """The development PKI folder is missing, already there, or misused."""


# Private keys must never land in the repository's certs/ folder, which is committed.
_REPO_CERTS = Path(__file__).resolve().parent.parent / "certs"


@dataclass(frozen=True)
class DevPKI:
    """A development PKI folder: paths, loaders, issuing and revocation."""

    directory: Path

    # --- paths and loaders

    def cert_path(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key.pem"

    def p12_path(self, name: str) -> Path:
        return self.directory / f"{name}.p12"

    @property
    def root_path(self) -> Path:
        return self.cert_path(ROOT_CA)

    def names(self) -> tuple[str, ...]:
        return tuple(self._index()["certs"])

    def cert(self, name: str) -> x509.Certificate:
        self._entry(name)
        return x509.load_pem_x509_certificate(self.cert_path(name).read_bytes())

    def key(self, name: str) -> PrivateKey:
        self._entry(name)
        return load_key(self.key_path(name))

    def root(self) -> x509.Certificate:
        return self.cert(ROOT_CA)

    def chain(self, name: str) -> list[x509.Certificate]:
        """The certificate, then its issuers up to the root, the root left out."""
        out = [self.cert(name)]
        issuer = self._entry(name)["issuer"]
        while issuer != ROOT_CA:
            out.append(self.cert(issuer))
            issuer = self._entry(issuer)["issuer"]
        return out

    def signer(self, name: str) -> Signer:
        """The key of ``name`` with its chain to send along (the root is the anchor)."""
        leaf, *intermediates = self.chain(name)
        return Signer(self.key(name), leaf, tuple(intermediates))

    @property
    def crl_url(self) -> str | None:
        return self._index().get("crl_url")

    @property
    def ocsp_url(self) -> str | None:
        return self._index().get("ocsp_url")

    # --- issuing

    def issue(
        self,
        name: str,
        *,
        subject: x509.Name,
        profile: Profile,
        issuer: str,
        key: PrivateKey | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        p12: bool = False,
    ) -> x509.Certificate:
        """Issue any certificate from one of this PKI's CAs and write it to the folder."""
        if not name or "/" in name or name.startswith("."):
            raise DevPKIError(f"{name!r} is not usable as a certificate name")
        now = datetime.now(UTC)
        not_before = not_before or now - timedelta(hours=1)
        not_after = not_after or not_before + timedelta(days=730)
        key = key or new_key()
        self_signed = name == issuer
        issuer_cert = None if self_signed else self.cert(issuer)
        issuer_key = key if self_signed else self.key(issuer)
        cert = build_cert(
            subject=subject,
            public_key=key.public_key(),
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            not_before=not_before,
            not_after=not_after,
            profile=profile,
        )
        write_private_key(self.key_path(name), key)
        write_cert(self.cert_path(name), cert)
        if p12:
            chain = [cert, *self.chain(issuer), self.root()] if issuer_cert else [cert]
            write_p12(self.p12_path(name), name, key, chain)
        index = self._index()
        index["certs"][name] = {
            "issuer": issuer,
            "serial": cert.serial_number,
            "revoked_at": None,
            "ca": profile.ca_path_length is not None,
        }
        self._write_index(index)
        return cert

    def issue_signer(
        self,
        name: str,
        *,
        authority_id: str | None = None,
        country: str = "ES",
        organization: str = "Ministerio de Justicia",
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_usage: frozenset[str] = SIGNING_KEY_USAGE,
        key: PrivateKey | None = None,
        crl_url: str | None = None,
        ocsp_url: str | None = None,
        revoked: bool = False,
    ) -> x509.Certificate:
        """A signing certificate from `signers-ca`; the knobs make bad ones for tests.

        `authority_id` defaults to `name`; `crl_url`/`ocsp_url` default to the
        PKI's own (base URL for CRLs, as in `create_dev_pki`).
        """
        authority_id = authority_id or name
        cert = self.issue(
            name,
            subject=name_for_authority(authority_id, country, organization),
            profile=Profile(
                key_usage=key_usage,
                crl_url=_crl_point(crl_url or self.crl_url, SIGNERS_CA),
                ocsp_url=ocsp_url or self.ocsp_url,
            ),
            issuer=SIGNERS_CA,
            key=key,
            not_before=not_before,
            not_after=not_after,
            p12=True,
        )
        if revoked:
            self.revoke(name)
        return cert

    # --- revocation

    def revoke(self, name: str, *, at: datetime | None = None) -> None:
        index = self._index()
        self._entry(name, index)["revoked_at"] = (at or datetime.now(UTC)).isoformat()
        self._write_index(index)

    def is_revoked(self, name: str) -> bool:
        return self._entry(name)["revoked_at"] is not None

    def crl_der(self, issuer: str = SIGNERS_CA, *, now: datetime | None = None) -> bytes:
        """A fresh CRL of `issuer` (a CA name), signed now, listing its revoked serials."""
        if not self._entry(issuer)["ca"]:
            raise DevPKIError(f"{issuer!r} is not a CA of this PKI; it issues no CRL")
        crl = build_crl(
            issuer_cert=self.cert(issuer),
            issuer_key=self.key(issuer),
            revoked=[r for r in self._serials(issuer).values() if r is not None],
            now=now or datetime.now(UTC),
        )
        return crl.public_bytes(Encoding.DER)

    def ocsp_response_der(self, request_der: bytes, *, now: datetime | None = None) -> bytes:
        """Answer an OCSP request for any certificate of this PKI, signed by its CA."""
        cas = [n for n, entry in self._index()["certs"].items() if entry["ca"]]
        return build_ocsp_response(
            request_der,
            issuers=[(self.cert(ca), self.key(ca), self._serials(ca)) for ca in cas],
            now=now or datetime.now(UTC),
        )

    def _serials(self, issuer: str) -> dict[int, Revocation | None]:
        out: dict[int, Revocation | None] = {}
        for child, entry in self._index()["certs"].items():
            if entry["issuer"] != issuer or child == issuer:
                continue
            at = entry["revoked_at"]
            out[entry["serial"]] = (
                Revocation(entry["serial"], datetime.fromisoformat(at)) if at else None
            )
        return out

    # --- the index file

    def _index(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / INDEX).read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise DevPKIError(
                f"{self.directory} is not a development PKI folder "
                "(no index.json); create one with `rogatory pki init DIR`"
            ) from None

    def _entry(self, name: str, index: dict[str, Any] | None = None) -> dict[str, Any]:
        certs = (index or self._index())["certs"]
        if name not in certs:
            raise DevPKIError(f"no certificate named {name!r} in {self.directory}")
        return certs[name]  # type: ignore[no-any-return]

    def _write_index(self, index: dict[str, Any]) -> None:
        # write-then-rename, so a reader in another thread never sees half a file
        tmp = self.directory / f".{INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        tmp.replace(self.directory / INDEX)


def name_for_authority(authority_id: str, country: str, organization: str) -> x509.Name:
    return name(
        cn=f"{organization} ({authority_id})", o=organization, c=country, org_id=authority_id
    )


def _crl_point(base: str | None, issuer: str) -> str | None:
    return f"{base.rstrip('/')}/{issuer}.crl" if base else None


def create_dev_pki(
    directory: Path,
    *,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    now: datetime | None = None,
    overwrite: bool = False,
) -> DevPKI:
    """Create the development PKI in `directory` (see the module docstring).

    Refuses an existing PKI folder unless `overwrite=True`, which first
    removes every file the old PKI listed.
    """
    directory = Path(directory)
    resolved = directory.resolve()
    if resolved == _REPO_CERTS or _REPO_CERTS in resolved.parents:
        raise DevPKIError(
            f"refusing to write private keys under {_REPO_CERTS}: it is committed to git; "
            "choose a folder outside the repository"
        )
    pki = DevPKI(directory)
    if (directory / INDEX).exists() or pki.root_path.exists():
        if not overwrite:
            raise DevPKIError(
                f"{directory} already holds a development PKI; "
                "pass overwrite=True (`--force`) to replace it"
            )
        _remove_pki_files(pki)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki._write_index({"crl_url": crl_url, "ocsp_url": ocsp_url, "certs": {}})

    now = now or datetime.now(UTC)
    start = now - timedelta(hours=1)  # tolerate clock skew between demo machines
    years = timedelta(days=365)
    points = {ca: (_crl_point(crl_url, ca), ocsp_url) for ca in (ROOT_CA, SIGNERS_CA)}

    def from_root(name: str, subject: x509.Name, profile: Profile) -> None:
        pki.issue(
            name,
            subject=subject,
            profile=profile,
            issuer=ROOT_CA,
            not_before=start,
            not_after=start + 5 * years,
        )

    pki.issue(
        ROOT_CA,
        subject=name(cn="Rogatory Development Root CA", o=DEV_ORG, c="ES"),
        profile=Profile(key_usage=CA_KEY_USAGE, ca_path_length=1),
        issuer=ROOT_CA,
        not_before=start,
        not_after=start + 20 * years,
    )
    crl_root, ocsp = points[ROOT_CA]
    from_root(
        SIGNERS_CA,
        name(cn="Rogatory Development Signers CA", o=DEV_ORG, c="ES"),
        Profile(key_usage=CA_KEY_USAGE, ca_path_length=0, crl_url=crl_root, ocsp_url=ocsp),
    )
    for gateway, country in DEMO_GATEWAYS.items():
        from_root(
            gateway,
            name(cn=gateway, o=DEV_ORG, c=country),
            Profile(
                key_usage=frozenset({"digitalSignature", "keyEncipherment"}),
                eku=("serverAuth", "clientAuth"),
                dns_names=("localhost", gateway),
                ip_addresses=("127.0.0.1",),
                crl_url=crl_root,
                ocsp_url=ocsp,
            ),
        )
    from_root(
        TSA,
        name(cn="Rogatory Development Time-Stamping Authority", o=DEV_ORG, c="ES"),
        Profile(
            key_usage=frozenset({"digitalSignature", "nonRepudiation"}),
            eku=("timeStamping",),
            eku_critical=True,  # RFC 3161 2.3: the only EKU, and critical
            crl_url=crl_root,
            ocsp_url=ocsp,
        ),
    )
    for authority in DEMO_AUTHORITIES:
        pki.issue_signer(
            authority.id,
            country=authority.country,
            organization=authority.organization,
            not_before=start,
            not_after=start + 2 * years,
        )
    return pki


def load_dev_pki(directory: Path) -> DevPKI:
    """Reopen a folder made by `create_dev_pki`; DevPKIError if it is not one."""
    pki = DevPKI(Path(directory))
    pki._index()
    if not pki.root_path.exists():
        raise DevPKIError(f"{directory} has no {ROOT_CA}.pem; it is not a complete dev PKI")
    return pki


def _remove_pki_files(pki: DevPKI) -> None:
    try:
        names = pki.names()
    except DevPKIError:
        names = (ROOT_CA,)
    for n in names:
        for path in (pki.cert_path(n), pki.key_path(n), pki.p12_path(n)):
            path.unlink(missing_ok=True)
    (pki.directory / INDEX).unlink(missing_ok=True)
