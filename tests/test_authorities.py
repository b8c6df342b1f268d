"""The authority directory: loading, refusals, authentication and signer binding."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from gateway.authorities import (
    Authority,
    AuthorityDirectory,
    AuthorityDirectoryError,
    fingerprint,
    hash_token,
    new_token,
)
from gateway.pki import DevPKI, create_dev_pki

ES_TOKEN = "es-token-for-tests"
AR_TOKEN = "ar-token-for-tests"


def example(pki: DevPKI) -> str:
    signers_ca = pki.cert("signers-ca").subject.rfc4514_string()
    return f"""
[[authority]]
id = "ES-MJ"
country = "ES"
name = "Ministerio de Justicia"
signing_certificates = ["{fingerprint(pki.cert("ES-MJ"))}"]
api_tokens = ["{hash_token(ES_TOKEN)}"]
tls_client_certificates = ["{fingerprint(pki.cert("gw-es"))}"]

[[authority]]
id = "AR-MJ"
country = "AR"
name = "Ministerio de Justicia y Derechos Humanos"
signer_constraints = [{{ issuer = "{signers_ca}", organization_identifier = "AR-MJ" }}]
api_tokens = ["{hash_token(AR_TOKEN)}"]

[[authority]]
id = "CO-FGN"
country = "CO"
name = "Fiscalía General de la Nación"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authorities.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def directory(pki: DevPKI, tmp_path_factory: pytest.TempPathFactory) -> AuthorityDirectory:
    return AuthorityDirectory.load(write(tmp_path_factory.mktemp("dir"), example(pki)))


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(AuthorityDirectoryError) as info:
        AuthorityDirectory.load(write(tmp_path, text))
    return str(info.value)


MINIMAL = '[[authority]]\nid = "ES-MJ"\ncountry = "ES"\nname = "MJ"\n'


def test_the_example_loads(directory: AuthorityDirectory) -> None:
    assert [a.id for a in directory] == ["ES-MJ", "AR-MJ", "CO-FGN"]
    es = directory.get("ES-MJ")
    assert es is not None and es.country == "ES" and es.name == "Ministerio de Justicia"
    assert directory.get("CO-FGN") == Authority("CO-FGN", "CO", "Fiscalía General de la Nación")
    assert directory.get("XX-NO") is None


def test_tokens_are_kept_as_digests_only(directory: AuthorityDirectory) -> None:
    es = directory.get("ES-MJ")
    assert es is not None
    assert es.api_tokens == {hash_token(ES_TOKEN)}
    assert ES_TOKEN not in repr(es)


def test_token_authenticates_its_own_authority_only(directory: AuthorityDirectory) -> None:
    assert getattr(directory.authenticate_token(ES_TOKEN), "id", None) == "ES-MJ"
    assert getattr(directory.authenticate_token(AR_TOKEN), "id", None) == "AR-MJ"
    assert directory.authenticate_token("wrong") is None
    assert directory.authenticate_token("") is None
    assert directory.authenticate_token(hash_token(ES_TOKEN)) is None  # the digest is no token


def test_client_certificate_authentication(directory: AuthorityDirectory, pki: DevPKI) -> None:
    assert getattr(directory.authenticate_client_certificate(pki.cert("gw-es")), "id", "") == (
        "ES-MJ"
    )
    assert directory.authenticate_client_certificate(pki.cert("gw-ar")) is None
    # The authority's signing certificate is not a TLS client credential.
    assert directory.authenticate_client_certificate(pki.cert("ES-MJ")) is None


def test_signer_belongs_by_fingerprint(directory: AuthorityDirectory, pki: DevPKI) -> None:
    es = directory.get("ES-MJ")
    assert es is not None
    assert directory.signer_belongs(es, pki.cert("ES-MJ"))
    assert not directory.signer_belongs(es, pki.cert("AR-MJ"))
    assert not directory.signer_belongs(es, pki.cert("gw-es"))


def test_signer_belongs_by_issuer_and_organization_identifier(
    directory: AuthorityDirectory, pki: DevPKI
) -> None:
    ar = directory.get("AR-MJ")
    assert ar is not None
    assert directory.signer_belongs(ar, pki.cert("AR-MJ"))
    assert not directory.signer_belongs(ar, pki.cert("ES-MJ"))
    # An authority with neither listed nor constrained signers accepts no one.
    co = directory.get("CO-FGN")
    assert co is not None and not directory.signer_belongs(co, pki.cert("CO-FGN"))


def test_signer_from_an_untrusted_ca_with_the_same_names_is_refused(
    directory: AuthorityDirectory, pki: DevPKI, tmp_path: Path
) -> None:
    # Another PKI with identical names: same subject and issuer DN strings, other keys.
    other = create_dev_pki(tmp_path / "other")
    ar, es = directory.get("AR-MJ"), directory.get("ES-MJ")
    assert ar is not None and es is not None
    assert not directory.signer_belongs(es, other.cert("ES-MJ"))
    # The DN constraint alone does match: the trust engine must validate the chain first.
    assert directory.signer_belongs(ar, other.cert("AR-MJ"))
    impostor = other.issue_signer("impostor", authority_id="ES-MJ")
    assert not directory.signer_belongs(ar, impostor)


def test_signer_constraint_by_subject(pki: DevPKI, tmp_path: Path) -> None:
    subject = pki.cert("PT-PGR").subject.rfc4514_string()
    issuer = pki.cert("signers-ca").subject.rfc4514_string()
    text = (
        '[[authority]]\nid = "PT-PGR"\ncountry = "PT"\nname = "PGR"\n'
        f'signer_constraints = [{{ issuer = "{issuer}", subject = "{subject}" }}]\n'
    )
    directory = AuthorityDirectory.load(write(tmp_path, text))
    pt = directory.get("PT-PGR")
    assert pt is not None
    assert directory.signer_belongs(pt, pki.cert("PT-PGR"))
    assert not directory.signer_belongs(pt, pki.cert("MX-FGR"))


def test_organization_identifier_by_name_in_a_dn(pki: DevPKI, tmp_path: Path) -> None:
    text = (
        '[[authority]]\nid = "MX-FGR"\ncountry = "MX"\nname = "FGR"\nsigner_constraints = [{ '
        'issuer = "CN=Rogatory Development Signers CA,O=Rogatory Development,C=ES", '
        'subject = "CN=Fiscalía General de la República (MX-FGR),'
        'organizationIdentifier=MX-FGR,O=Fiscalía General de la República,C=MX" }]\n'
    )
    directory = AuthorityDirectory.load(write(tmp_path, text))
    mx = directory.get("MX-FGR")
    assert mx is not None and directory.signer_belongs(mx, pki.cert("MX-FGR"))


def test_an_authority_from_elsewhere_is_not_trusted(
    directory: AuthorityDirectory, pki: DevPKI
) -> None:
    forged = Authority("ES-MJ", "ES", "MJ", signing_certificates=frozenset())
    assert not directory.signer_belongs(forged, pki.cert("ES-MJ"))
    forged = Authority(
        "XX", "ES", "X", signing_certificates=frozenset({fingerprint(pki.cert("ES-MJ"))})
    )
    assert not directory.signer_belongs(forged, pki.cert("ES-MJ"))


def test_openssl_fingerprint_spelling_is_accepted(pki: DevPKI, tmp_path: Path) -> None:
    hex_part = fingerprint(pki.cert("ES-MJ")).removeprefix("sha256:").upper()
    colons = ":".join(hex_part[i : i + 2] for i in range(0, len(hex_part), 2))
    directory = AuthorityDirectory.load(
        write(tmp_path, MINIMAL + f'signing_certificates = ["SHA256:{colons}"]\n')
    )
    es = directory.get("ES-MJ")
    assert es is not None and directory.signer_belongs(es, pki.cert("ES-MJ"))


def test_hash_token_and_new_token() -> None:
    assert hash_token("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    first, second = new_token(), new_token()
    assert first != second and len(first) >= 43


# --- malformed files, each refused with the key named


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + 'api_tokens = ["sha256:\n')
    assert "not valid TOML" in message and "line 5" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[authority]]\ncountry = "ES"\nname = "MJ"\n', "authority[0]: missing key 'id'"),
        ('[[authority]]\nid = "ES-MJ"\nname = "MJ"\n', "missing key 'country'"),
        ('[[authority]]\nid = "ES-MJ"\ncountry = "ES"\n', "missing key 'name'"),
        (MINIMAL.replace('"ES"', '"Spain"'), "country 'Spain'"),
        (MINIMAL.replace('"ES-MJ"', '"ES MJ"'), "id 'ES MJ'"),
        (MINIMAL.replace('id = "ES-MJ"', "id = 7"), "id must be a non-empty string"),
        (MINIMAL + "api_token = []\n", "unknown key 'api_token'"),
        ('[authority]\nid = "ES-MJ"\n', "array of tables"),
        ("[[authorities]]\n", "unknown top-level key 'authorities'"),
        (MINIMAL + 'api_tokens = "sha256:00"\n', "api_tokens must be an array"),
        (MINIMAL + 'api_tokens = ["my-secret-token"]\n', "api_tokens[0] is not 'sha256:'"),
        (MINIMAL + 'signing_certificates = ["sha256:abcd"]\n', "signing_certificates[0]"),
        (MINIMAL + f'tls_client_certificates = ["md5:{"0" * 64}"]\n', "tls_client_certificates[0]"),
        (MINIMAL + f'api_tokens = ["sha256:{"a" * 64}", "SHA256:{"A" * 64}"]\n', "listed twice"),
        (MINIMAL + 'signer_constraints = [{ organization_identifier = "ES-MJ" }]\n', "'issuer'"),
        (
            MINIMAL + 'signer_constraints = [{ issuer = "CN=CA" }]\n',
            "organization_identifier or subject",
        ),
        (
            MINIMAL + 'signer_constraints = [{ issuer = "not a dn", subject = "CN=x" }]\n',
            "issuer 'not a dn'",
        ),
        (MINIMAL + 'signer_constraints = [{ issuer = "CN=CA", org = "x" }]\n', "unknown key 'org'"),
        (
            MINIMAL + 'signer_constraints = ["CN=CA"]\n',
            "signer_constraints[0]: expected an inline table",
        ),
    ],
)
def test_malformed_directory_is_refused_naming_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in refused(tmp_path, text)


def test_the_error_names_the_authority_and_the_file(tmp_path: Path) -> None:
    message = refused(tmp_path, MINIMAL + "\n" + MINIMAL.replace("ES-MJ", "AR-MJ") + "name2 = 1\n")
    assert "authorities.toml" in message and "authority[1] (id 'AR-MJ')" in message


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    assert "'ES-MJ' appears twice" in refused(tmp_path, MINIMAL + MINIMAL)


def test_a_token_bound_to_two_authorities_is_refused(tmp_path: Path) -> None:
    token = f'api_tokens = ["{hash_token("shared")}"]\n'
    text = MINIMAL + token + MINIMAL.replace("ES-MJ", "AR-MJ") + token
    assert "already bound to 'ES-MJ'" in refused(tmp_path, text)


def test_a_client_certificate_bound_to_two_authorities_is_refused(
    tmp_path: Path, pki: DevPKI
) -> None:
    cert = f'tls_client_certificates = ["{fingerprint(pki.cert("gw-es"))}"]\n'
    text = MINIMAL + cert + MINIMAL.replace("ES-MJ", "AR-MJ") + cert
    assert "already bound to 'ES-MJ'" in refused(tmp_path, text)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthorityDirectoryError, match="cannot read the authority directory"):
        AuthorityDirectory.load(tmp_path / "absent.toml")


def test_an_empty_directory_loads_empty(tmp_path: Path) -> None:
    assert len(AuthorityDirectory.load(write(tmp_path, "# nobody yet\n"))) == 0


def test_constraint_requires_exactly_one_organization_identifier(tmp_path: Path) -> None:
    from cryptography.x509.oid import NameOID

    from gateway.pki_issue import Profile

    pki = create_dev_pki(tmp_path / "pki")  # its own: this test issues a certificate
    issuer = pki.cert("signers-ca").subject.rfc4514_string()
    text = MINIMAL + (
        f'signer_constraints = [{{ issuer = "{issuer}", organization_identifier = "ES-MJ" }}]\n'
    )
    directory = AuthorityDirectory.load(write(tmp_path, text))
    twice = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "ES-MJ"),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "AR-MJ"),
            x509.NameAttribute(NameOID.COMMON_NAME, "two hats"),
        ]
    )
    cert = pki.issue("two-hats", subject=twice, profile=Profile(), issuer="signers-ca")
    es = directory.get("ES-MJ")
    assert es is not None
    assert directory.signer_belongs(es, pki.cert("ES-MJ"))
    assert not directory.signer_belongs(es, cert)
