"""S/MIME: signing, verification through the trust engine, encryption; checked against openssl."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.pki import DevPKI, create_dev_pki
from signing.errors import SigningError
from signing.keys import Signer
from signing.smime import (
    SmimeError,
    SmimeKind,
    classify,
    decrypt_smime,
    encrypt_smime,
    sign_smime,
    verify_smime,
)
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.verdict import Indication, SubIndication
from tests.mailservers import issue_smime

ENTITY = (
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Request for mutual legal assistance, see the attached envelope.\r\n"
)


@pytest.fixture(scope="module")
def smime_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPKI:
    # Our own PKI: the session one must keep exactly its demo certificates.
    return create_dev_pki(tmp_path_factory.mktemp("smime-pki"))


@pytest.fixture(scope="module")
def smime_engine(smime_pki: DevPKI) -> TrustEngine:
    return TrustEngine(
        TrustPolicy(
            anchors=(smime_pki.root(),), revocation=RevocationPolicy.HARD, allow_fetching=False
        )
    )


@pytest.fixture(scope="module")
def mailer(smime_pki: DevPKI) -> Signer:
    """An RSA S/MIME certificate with emailProtection, as a counterpart's mail client has."""
    return issue_smime(smime_pki, "mailer", "mla@ar.example")


def openssl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)


SIGNATURE_PART = b'filename="smime.p7s"\r\n\r\n'


def signature_der(message: bytes) -> bytes:
    """The CMS signature in our multipart/signed output (its last part)."""
    return base64.b64decode(message.split(SIGNATURE_PART)[1].split(b"\r\n\r\n--")[0])


def with_signature(message: bytes, der: bytes) -> bytes:
    head, rest = message.split(SIGNATURE_PART)
    tail = rest[rest.index(b"\r\n\r\n--") + 2 :]
    return head + SIGNATURE_PART + base64.encodebytes(der).replace(b"\n", b"\r\n") + tail


def test_signed_entity_verifies_and_yields_exactly_what_was_signed(
    smime_pki: DevPKI, smime_engine: TrustEngine
) -> None:
    signer = smime_pki.signer("ES-MJ")  # EC P-256, issued by the signers CA
    message = sign_smime(ENTITY, signer)

    assert message.startswith(b"MIME-Version: 1.0\r\nContent-Type: multipart/signed;")
    assert b'protocol="application/pkcs7-signature"' in message
    assert b"micalg=sha-256" in message
    result = verify_smime(message, smime_engine)
    assert result.ok, result.verdict
    assert result.content == ENTITY
    assert result.signer == signer.cert
    assert result.report.details == {"format": "multipart/signed", "digest": "sha256"}
    assert result.report.signing_time is not None
    assert abs(result.report.signing_time - datetime.now(UTC)) < timedelta(minutes=1)
    assert result.report.chain[0] == smime_pki.root().subject.rfc4514_string()
    # The chain travels with the signature: the signer and the signers CA.
    signed_data = cms.ContentInfo.load(signature_der(message))["content"]
    assert {c.chosen.dump() for c in signed_data["certificates"]} == {
        c.public_bytes(Encoding.DER) for c in (signer.cert, *signer.chain)
    }


def test_only_the_signed_entity_is_returned_never_the_outer_headers(
    mailer: Signer, smime_engine: TrustEngine
) -> None:
    mail = b"From: mla@ar.example\r\nSubject: forged subject\r\n" + sign_smime(ENTITY, mailer)

    result = verify_smime(mail, smime_engine)

    assert result.ok, result.verdict
    assert result.content == ENTITY
    assert b"forged subject" not in result.content


def test_lf_only_mail_is_verified_in_canonical_crlf_form(
    mailer: Signer, smime_engine: TrustEngine
) -> None:
    message = sign_smime(ENTITY.replace(b"\r\n", b"\n"), mailer)  # signed canonically anyway

    result = verify_smime(message.replace(b"\r\n", b"\n"), smime_engine)

    assert result.ok, result.verdict
    assert result.content == ENTITY


def test_tampered_content_fails_with_a_hash_failure(
    mailer: Signer, smime_engine: TrustEngine
) -> None:
    message = sign_smime(ENTITY, mailer).replace(b"attached envelope", b"attached envelopE")

    result = verify_smime(message, smime_engine)

    assert result.verdict.indication is Indication.TOTAL_FAILED
    assert result.verdict.subindication is SubIndication.HASH_FAILURE
    assert "changed after signing" in result.verdict.reason
    assert result.content is None


def test_tampered_signature_value_fails(mailer: Signer, smime_engine: TrustEngine) -> None:
    message = sign_smime(ENTITY, mailer)
    info = cms.ContentInfo.load(signature_der(message))
    signer_info = info["content"]["signer_infos"][0]
    value = bytearray(signer_info["signature"].native)
    value[10] ^= 1
    signer_info["signature"] = bytes(value)

    result = verify_smime(with_signature(message, info.dump(force=True)), smime_engine)

    assert result.verdict.subindication is SubIndication.SIG_CRYPTO_FAILURE
    assert result.content is None


def test_signer_certificate_missing_from_the_message(
    mailer: Signer, smime_engine: TrustEngine
) -> None:
    message = sign_smime(ENTITY, mailer)
    info = cms.ContentInfo.load(signature_der(message))
    info["content"]["certificates"] = [
        c
        for c in info["content"]["certificates"]
        if c.chosen.dump() != mailer.cert.public_bytes(Encoding.DER)
    ]

    result = verify_smime(with_signature(message, info.dump(force=True)), smime_engine)

    assert result.verdict.subindication is SubIndication.NO_SIGNING_CERTIFICATE_FOUND
    assert "not among the message's certificates" in result.verdict.reason


def test_signer_from_another_pki_is_not_trusted_even_with_its_root_attached(
    tmp_path: Path, smime_engine: TrustEngine
) -> None:
    other = create_dev_pki(tmp_path / "other")
    stranger = issue_smime(other, "stranger", "mla@ar.example")
    with_root = Signer(stranger.key, stranger.cert, (*stranger.chain, other.root()))

    result = verify_smime(sign_smime(ENTITY, with_root), smime_engine)

    # Its CAs bear our CAs' names: path building finds our root, whose signature fails.
    assert result.verdict.indication is Indication.INDETERMINATE
    assert result.verdict.subindication in {
        SubIndication.NO_CERTIFICATE_CHAIN_FOUND,
        SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
    }
    assert result.content is None
    assert result.signer == stranger.cert


def test_certificate_for_other_purposes_is_refused(
    smime_pki: DevPKI, smime_engine: TrustEngine
) -> None:
    # gw-es is a TLS certificate (serverAuth, clientAuth): not for signing e-mail.
    result = verify_smime(sign_smime(ENTITY, smime_pki.signer("gw-es")), smime_engine)

    assert result.verdict.subindication is SubIndication.CHAIN_CONSTRAINTS_FAILURE
    assert "emailProtection" in result.verdict.reason


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_weak_digest_is_refused(
    digest: str, smime_pki: DevPKI, mailer: Signer, smime_engine: TrustEngine, tmp_path: Path
) -> None:
    (tmp_path / "entity").write_bytes(ENTITY)
    made = openssl(
        "cms", "-sign", "-md", digest, "-in", str(tmp_path / "entity"),
        "-signer", str(smime_pki.cert_path("mailer")),
        "-inkey", str(smime_pki.key_path("mailer")),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    result = verify_smime(made.stdout, smime_engine)

    assert result.verdict.subindication is SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE
    assert "no longer accepted" in result.verdict.reason
    assert result.content is None


@pytest.mark.parametrize("opaque", [False, True], ids=["multipart-signed", "opaque-signed-data"])
def test_mail_signed_by_openssl_verifies(
    opaque: bool, smime_pki: DevPKI, smime_engine: TrustEngine, mailer: Signer, tmp_path: Path
) -> None:
    (tmp_path / "entity").write_bytes(ENTITY)
    made = openssl(
        "cms", "-sign", "-in", str(tmp_path / "entity"),
        "-signer", str(smime_pki.cert_path("mailer")),
        "-inkey", str(smime_pki.key_path("mailer")),
        "-certfile", str(smime_pki.cert_path("signers-ca")),
        *(["-nodetach"] if opaque else []),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    result = verify_smime(made.stdout, smime_engine)  # openssl writes LF line ends

    assert result.ok, result.verdict
    assert result.content == ENTITY
    assert classify(made.stdout) is (SmimeKind.OPAQUE_SIGNED if opaque else SmimeKind.SIGNED)


def test_openssl_verifies_our_signature(smime_pki: DevPKI, mailer: Signer, tmp_path: Path) -> None:
    (tmp_path / "mail").write_bytes(b"Subject: x\r\n" + sign_smime(ENTITY, mailer))

    checked = openssl(
        "cms", "-verify", "-in", str(tmp_path / "mail"), "-CAfile", str(smime_pki.root_path)
    )

    assert checked.returncode == 0, checked.stderr
    assert b"Verification successful" in checked.stderr
    assert checked.stdout == ENTITY


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (ENTITY, "not S/MIME signed (Content-Type text/plain)"),
        (b"no headers at all", "no header block"),
        (
            b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
            b'boundary="b"\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n',
            "not a CMS signature",
        ),
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'boundary="b"\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n',
            "no closing boundary",
        ),
        (
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'boundary="b"\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b\r\n\r\nz\r\n--b--\r\n',
            "holds 3 parts",
        ),
        (
            b"Content-Type: text/plain\r\nContent-Type: multipart/signed\r\n\r\nx",
            "more than one Content-Type",
        ),
    ],
    ids=["unsigned", "no-headers", "pgp", "cut-short", "three-parts", "two-content-types"],
)
def test_malformed_messages_fail_with_a_reason(
    message: bytes, reason: str, smime_engine: TrustEngine
) -> None:
    result = verify_smime(message, smime_engine)

    assert result.verdict.indication is Indication.TOTAL_FAILED
    assert result.verdict.subindication is SubIndication.FORMAT_FAILURE
    assert reason in result.verdict.reason
    assert result.content is None


def test_oversized_message_is_not_read(mailer: Signer, smime_engine: TrustEngine) -> None:
    message = sign_smime(ENTITY, mailer)

    result = verify_smime(message, smime_engine, max_bytes=len(message) - 1)

    assert "exceeds the limit" in result.verdict.reason


def test_encrypted_message_must_be_decrypted_first(
    mailer: Signer, smime_engine: TrustEngine
) -> None:
    sealed = encrypt_smime(sign_smime(ENTITY, mailer), [mailer.cert])

    assert classify(sealed) is SmimeKind.ENVELOPED
    assert "decrypt it before" in verify_smime(sealed, smime_engine).verdict.reason
    assert verify_smime(decrypt_smime(sealed, mailer.key, mailer.cert), smime_engine).ok


def test_encrypt_then_decrypt_round_trip_and_openssl_decrypts_it(
    smime_pki: DevPKI, mailer: Signer, tmp_path: Path
) -> None:
    sealed = encrypt_smime(ENTITY, [mailer.cert])

    assert b"smime-type=enveloped-data" in sealed
    assert b"attached envelope" not in sealed
    assert decrypt_smime(sealed, mailer.key, mailer.cert) == ENTITY
    info = cms.ContentInfo.load(base64.b64decode(sealed.split(b"\r\n\r\n", 1)[1]))
    algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == "aes256_cbc"
    (tmp_path / "sealed").write_bytes(sealed)
    opened = openssl(
        "cms", "-decrypt", "-in", str(tmp_path / "sealed"),
        "-recip", str(smime_pki.cert_path("mailer")),
        "-inkey", str(smime_pki.key_path("mailer")),
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout == ENTITY


def test_decrypts_what_openssl_encrypted(smime_pki: DevPKI, mailer: Signer, tmp_path: Path) -> None:
    (tmp_path / "entity").write_bytes(ENTITY)
    sealed = openssl(
        "cms", "-encrypt", "-aes256", "-in", str(tmp_path / "entity"),
        str(smime_pki.cert_path("mailer")),
    )  # fmt: skip
    assert sealed.returncode == 0, sealed.stderr

    assert decrypt_smime(sealed.stdout, mailer.key, mailer.cert) == ENTITY


def test_decryption_refuses_what_it_cannot_open(smime_pki: DevPKI, mailer: Signer) -> None:
    other = issue_smime(smime_pki, "other-mailer", "other@ar.example")
    sealed = encrypt_smime(ENTITY, [mailer.cert])

    with pytest.raises(SmimeError, match="cannot be decrypted"):
        decrypt_smime(sealed, other.key, other.cert)
    with pytest.raises(SmimeError, match="not encrypted"):
        decrypt_smime(ENTITY, mailer.key, mailer.cert)
    with pytest.raises(SmimeError, match="needs an RSA key"):
        es = smime_pki.signer("ES-MJ")
        decrypt_smime(sealed, es.key, es.cert)


def test_encryption_needs_rsa_recipients(smime_pki: DevPKI) -> None:
    with pytest.raises(SigningError, match="RSA recipient keys only"):
        encrypt_smime(ENTITY, [smime_pki.cert("ES-MJ")])


@pytest.mark.parametrize(
    ("entity", "reason"),
    [
        (b"Content-Type: text/plain\r\n\r\ncaf\xc3\xa9\r\n", "8-bit"),
        (b"Content-Type: text/plain\r\n\r\n" + b"x" * 1000 + b"\r\n", "longer than 998"),
        (b"Subject: no content type\r\n\r\nx\r\n", "no Content-Type"),
    ],
    ids=["8-bit", "long-line", "no-content-type"],
)
def test_signing_refuses_what_mail_would_mangle(entity: bytes, reason: str, mailer: Signer) -> None:
    with pytest.raises(SigningError, match=reason):
        sign_smime(entity, mailer)
