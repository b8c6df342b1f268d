"""First run in development mode: a data folder, a development PKI, demo authorities.

`ensure_development_setup(settings)` creates what is missing under
``data_dir`` and returns the settings completed with it:

    <data_dir>/pki/              the development PKI (gateway.pki), plus
                                 <gateway_id>-evidence, the gateway's signing cert
    <data_dir>/authorities.toml  the five demo authorities, tokens hashed
    <data_dir>/tokens.txt        their clear API tokens, mode 0600, written once

What the operator configured is kept; a second run changes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gateway.authorities import fingerprint, hash_token, new_token
from gateway.pki import (
    DEMO_AUTHORITIES,
    DEMO_GATEWAYS,
    INDEX,
    SIGNERS_CA,
    DevPKI,
    create_dev_pki,
    load_dev_pki,
)
from gateway.settings import Settings, SettingsError

DEFAULT_GATEWAY = "gw-es"
# Which demo gateway's TLS client certificate speaks for which demo authority.
CLIENT_CERTIFICATES = {"ES-MJ": "gw-es", "AR-MJ": "gw-ar"}


def ensure_development_setup(settings: Settings) -> Settings:
    if not settings.development:
        raise SettingsError("the development setup is for mode = development only")
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki_dir = settings.pki_dir or data_dir / "pki"
    pki = load_dev_pki(pki_dir) if (pki_dir / INDEX).exists() else create_dev_pki(pki_dir)

    gateway_id = settings.gateway_id or DEFAULT_GATEWAY
    country = settings.gateway_country or DEMO_GATEWAYS.get(gateway_id, "ES")
    name = settings.gateway_name or f"Rogatory development gateway ({gateway_id})"
    changes: dict[str, object] = {
        "gateway_id": gateway_id,
        "gateway_country": country,
        "gateway_name": name,
    }
    if not (settings.signing_key and settings.signing_cert):
        evidence = _evidence_signer(pki, gateway_id, country, name)
        changes |= {
            "signing_key": pki.key_path(evidence),
            "signing_cert": pki.cert_path(evidence),
            "signing_chain": (pki.cert_path(SIGNERS_CA),),
        }
    if not settings.plain_http and not (settings.tls_cert and settings.tls_key):
        tls = gateway_id if gateway_id in DEMO_GATEWAYS else DEFAULT_GATEWAY
        changes |= {"tls_cert": pki.cert_path(tls), "tls_key": pki.key_path(tls)}
    if not settings.tls_client_ca:
        changes["tls_client_ca"] = pki.root_path
    if not settings.trust_anchors:
        changes["trust_anchors"] = (pki.root_path,)
    if not settings.authorities_file:
        authorities = data_dir / "authorities.toml"
        if not authorities.exists():
            _write_demo_directory(pki, authorities, data_dir / "tokens.txt")
        changes["authorities_file"] = authorities
    return settings.replace(**changes)


def read_demo_tokens(data_dir: Path) -> dict[str, str]:
    """The demo authorities' clear tokens that ``ensure_development_setup`` wrote."""
    lines = (data_dir / "tokens.txt").read_text().splitlines()
    pairs = (line.split(maxsplit=1) for line in lines if line and not line.startswith("#"))
    return {authority: token.strip() for authority, token in pairs}


def _evidence_signer(pki: DevPKI, gateway_id: str, country: str, organization: str) -> str:
    """The gateway's evidence-signing certificate, issued once; organizationIdentifier = id."""
    name = f"{gateway_id}-evidence"
    if name not in pki.names():
        pki.issue_signer(name, authority_id=gateway_id, country=country, organization=organization)
    return name


def _write_demo_directory(pki: DevPKI, path: Path, tokens_path: Path) -> None:
    tokens = {a.id: new_token() for a in DEMO_AUTHORITIES}
    lines = [
        "# Demo API tokens, one per authority: send as 'Authorization: Bearer <token>'.",
        f"# The authority directory ({path.name}) holds only their SHA-256 digests.",
        *(f"{authority_id} {token}" for authority_id, token in tokens.items()),
    ]
    # Tokens first: a directory whose tokens nobody was shown would lock everyone out.
    write_atomically(tokens_path, "\n".join(lines) + "\n", mode=0o600)
    blocks = ["# The authority directory of this development gateway (see docs/operations.md).\n"]
    for authority in DEMO_AUTHORITIES:
        fields: dict[str, str | list[str]] = {
            "id": authority.id,
            "country": authority.country,
            "name": authority.organization,
            "signing_certificates": [fingerprint(pki.cert(authority.id))],
            "api_tokens": [hash_token(tokens[authority.id])],
        }
        client = CLIENT_CERTIFICATES.get(authority.id)
        if client:
            fields["tls_client_certificates"] = [fingerprint(pki.cert(client))]
        body = "".join(f"{key} = {_toml(value)}\n" for key, value in fields.items())
        blocks.append(f"[[authority]]\n{body}")
    write_atomically(path, "\n".join(blocks), mode=0o644)


def _toml(value: str | list[str]) -> str:
    # A JSON string is a valid TOML basic string; a JSON array of them a TOML array.
    return json.dumps(value, ensure_ascii=False)


def write_atomically(path: Path, text: str, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
