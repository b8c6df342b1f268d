"""Two development gateways that know each other: gw-es serves ES-MJ, gw-ar serves AR-MJ.

For ``rogatory demo`` and the two-gateway tests. Under one base folder:

    <base>/pki/               one development PKI (both gateways trust its root)
    <base>/gw-es/, <base>/gw-ar/
        authorities.toml      its own authority (with a fresh API token) and the
                              other country's, reached through the other gateway
        config.toml           the settings `rogatory serve|worker` read (ROGATORY_CONFIG)
        tokens.txt            the clear token of its authority (mode 0600)

Each directory lists the other gateway with its URL, the root its TLS
certificate chains to, the TLS client certificate it presents and the
certificate it signs evidences with: exactly what a real pair would exchange.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gateway.authorities import fingerprint, hash_token, new_token
from gateway.bootstrap import ensure_development_setup, write_atomically
from gateway.pki import DEMO_AUTHORITIES, DevPKI, load_dev_pki
from gateway.settings import Settings

# (gateway id, country, the authority it serves)
PAIR = (("gw-es", "ES", "ES-MJ"), ("gw-ar", "AR", "AR-MJ"))


@dataclass(frozen=True)
class Member:
    gateway_id: str
    country: str
    authority_id: str
    data_dir: Path
    port: int
    token: str
    settings: Settings
    config_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def prepare_pair(base: Path, ports: tuple[int, int]) -> tuple[Member, Member]:
    """Write (or rewrite) both gateways' settings and directories under ``base``."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    base = base.resolve()  # config.toml holds absolute paths: they are read from elsewhere
    pki_dir = base / "pki"
    completed: list[Settings] = []
    for (gateway_id, country, _), port in zip(PAIR, ports, strict=True):
        data_dir = base / gateway_id
        settings = Settings(
            mode="development", data_dir=data_dir, gateway_id=gateway_id,
            gateway_country=country, pki_dir=pki_dir, port=port,
            authorities_file=data_dir / "authorities.toml",
            # A dispatcher that answers quickly in a demo: retry after 0.2 s, 0.4 s ...
            dispatch_backoff_seconds=0.2, dispatch_backoff_cap_seconds=5.0, poll_seconds=0.2,
        )  # fmt: skip
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        completed.append(ensure_development_setup(settings))
    pki = load_dev_pki(pki_dir)
    members = []
    for index, ((gateway_id, country, authority_id), port) in enumerate(
        zip(PAIR, ports, strict=True)
    ):
        other = 1 - index
        settings = completed[index]
        token = new_token()
        _write(settings.data_dir / "tokens.txt", f"{authority_id} {token}\n", mode=0o600)
        assert settings.authorities_file is not None
        _write(
            settings.authorities_file,
            _directory(pki, PAIR[index], token, PAIR[other], ports[other], completed[other]),
            mode=0o644,
        )
        config = settings.data_dir / "config.toml"
        _write(config, _config(settings), mode=0o600)
        members.append(
            Member(gateway_id, country, authority_id, settings.data_dir, port, token, settings,
                   config)
        )  # fmt: skip
    return members[0], members[1]


def _directory(
    pki: DevPKI,
    own: tuple[str, str, str],
    token: str,
    other: tuple[str, str, str],
    other_port: int,
    other_settings: Settings,
) -> str:
    names = {a.id: a.organization for a in DEMO_AUTHORITIES}
    _, own_country, own_authority = own
    other_gateway, other_country, other_authority = other
    assert other_settings.signing_cert is not None
    from cryptography import x509

    evidence_cert = x509.load_pem_x509_certificate(other_settings.signing_cert.read_bytes())
    return "\n".join(
        [
            "# Written by gateway.pair for the two-gateway demo.",
            "[[authority]]",
            f"id = {_q(own_authority)}",
            f"country = {_q(own_country)}",
            f"name = {_q(names[own_authority])}",
            f"signing_certificates = [{_q(fingerprint(pki.cert(own_authority)))}]",
            f"api_tokens = [{_q(hash_token(token))}]",
            "",
            "[[authority]]",
            f"id = {_q(other_authority)}",
            f"country = {_q(other_country)}",
            f"name = {_q(names[other_authority])}",
            f"signing_certificates = [{_q(fingerprint(pki.cert(other_authority)))}]",
            "[[authority.channel]]",
            'kind = "gateway"',
            f"gateway = {_q(other_gateway)}",
            "",
            "[[gateway]]",
            f"id = {_q(other_gateway)}",
            f"url = {_q(f'https://127.0.0.1:{other_port}')}",
            f"tls_ca = {_q(str(pki.root_path))}",
            f"client_certificates = [{_q(fingerprint(pki.cert(other_gateway)))}]",
            f"evidence_signers = [{_q(fingerprint(evidence_cert))}]",
            "",
        ]
    )


def _config(settings: Settings) -> str:
    keys = (
        "mode", "data_dir", "gateway_id", "gateway_country", "gateway_name", "pki_dir",
        "signing_key", "signing_cert", "tls_cert", "tls_key", "tls_client_ca",
        "authorities_file", "port", "dispatch_backoff_seconds", "dispatch_backoff_cap_seconds",
        "poll_seconds",
    )  # fmt: skip
    lines = ["# Written by gateway.pair: rogatory serve|worker with ROGATORY_CONFIG=<this file>."]
    for key in keys:
        value = getattr(settings, key)
        if value is None:
            continue
        lines.append(
            f"{key} = {json.dumps(value if isinstance(value, int | float) else str(value))}"
        )
    lines.append(f"signing_chain = {json.dumps([str(p) for p in settings.signing_chain])}")
    lines.append(f"trust_anchors = {json.dumps([str(p) for p in settings.trust_anchors])}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _write(path: Path, text: str, *, mode: int) -> None:
    write_atomically(path, text, mode=mode)
