"""PAdES signing: every level checked by poppler's pdfsig and by pyHanko's validator.

A live development PKI (CRL and OCSP served on 127.0.0.1) and a real RFC 3161
TSA back the B-T, B-LT and B-LTA signatures; validation data is fetched from
them at signing time and must then be enough to validate offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import (
    DocumentSecurityStore,
    PdfSignatureStatus,
    validate_pdf_signature,
    validate_pdf_timestamp,
)
from pyhanko_certvalidator import ValidationContext

from gateway.pki import DevPKI, create_dev_pki
from signing.errors import SigningError
from signing.keys import Signer, load_signer_p12
from signing.pades_sign import PadesLevel, VisibleBox, sign_pdf
from signing.timestamp import HttpTimeStamper
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from tests.conftest import signer_for
from tests.pdf_samples import encrypt_pdf, make_pdf
from tests.servers import TsaMode, revocation_server, tsa_server

PDFSIG = shutil.which("pdfsig")
needs_pdfsig = pytest.mark.skipif(PDFSIG is None, reason="poppler-utils (pdfsig) not installed")


@dataclass(frozen=True)
class Live:
    pki: DevPKI
    signer: Signer
    engine: TrustEngine  # hard-fail revocation, fetching from 127.0.0.1 allowed
    tsa: HttpTimeStamper


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("pades") / "pki"
    with revocation_server(folder) as url:
        pki = create_dev_pki(folder, crl_url=f"{url}/crl", ocsp_url=f"{url}/ocsp")
        with tsa_server(pki.cert("tsa"), pki.key("tsa")) as tsa_url:
            engine = TrustEngine(
                TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD)
            )
            yield Live(pki, signer_for(pki, "ES-MJ"), engine, HttpTimeStamper(tsa_url, timeout=5))


@pytest.fixture(scope="module")
def signed(live: Live) -> dict[PadesLevel, bytes]:
    """A 3-page PDF signed at every level, with a visible box on page 2."""
    return {
        level: sign_pdf(
            make_pdf(3),
            live.signer,
            level=level,
            timestamper=live.tsa,
            validation=live.engine,
            visible=VisibleBox.parse("2,50,50,250,120"),
            reason="Mutual legal assistance request",
            location="Madrid",
        )
        for level in PadesLevel
    }


def _asn1(cert: object) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))  # type: ignore[attr-defined]


def _context(pki: DevPKI, reader: PdfFileReader | None = None) -> ValidationContext:
    """Trust the dev root only; never fetch: with a reader, revocation must come from its DSS."""
    if reader is None:
        return ValidationContext(trust_roots=[_asn1(pki.root())], allow_fetching=False)
    dss = DocumentSecurityStore.read_dss(reader)
    return dss.as_validation_context(
        {"trust_roots": [_asn1(pki.root())], "allow_fetching": False, "revocation_mode": "require"}
    )


def _pdfsig(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "signed.pdf"
    path.write_bytes(data)
    assert PDFSIG is not None
    # -nocert: integrity only (no NSS database holds the dev root; no OCSP traffic)
    done = subprocess.run(
        [PDFSIG, "-nocert", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _signatures(stdout: str) -> list[str]:
    return re.split(r"^Signature #\d+:$", stdout, flags=re.M)[1:]


# --- every level, checked by pdfsig ------------------------------------------


@needs_pdfsig
@pytest.mark.parametrize("level", list(PadesLevel))
def test_pdfsig_finds_a_valid_etsi_signature(
    level: PadesLevel, signed: dict[PadesLevel, bytes], tmp_path: Path
) -> None:
    blocks = _signatures(_pdfsig(signed[level], tmp_path))
    first = blocks[0]
    assert "Signature Type: ETSI.CAdES.detached" in first
    assert "Signature Validation: Signature is Valid." in first
    assert "Signing Hash Algorithm: SHA-256" in first
    assert "ES-MJ" in first
    if level is PadesLevel.B_LTA:
        # the document time-stamp (ETSI.RFC3161), which pdfsig lists but cannot check
        assert len(blocks) == 2
        # it is followed only by pyHanko's DSS update with the TSA's own revocation data
        assert "Time-Stamping Authority" in blocks[1]
    else:
        assert len(blocks) == 1


# --- every level, checked by pyHanko with the dev root trusted -----------------


def _status(data: bytes, pki: DevPKI, *, offline_dss: bool = False) -> PdfSignatureStatus:
    reader = PdfFileReader(BytesIO(data))
    sig = reader.embedded_regular_signatures[0]
    context = _context(pki, reader if offline_dss else None)
    return validate_pdf_signature(sig, context, ts_validation_context=context)


@pytest.mark.parametrize("level", list(PadesLevel))
def test_pyhanko_validates_at_the_level(
    level: PadesLevel, signed: dict[PadesLevel, bytes], live: Live
) -> None:
    data = signed[level]
    reader = PdfFileReader(BytesIO(data))
    [sig] = reader.embedded_regular_signatures
    assert sig.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert sig.sig_object["/Reason"] == "Mutual legal assistance request"
    assert sig.sig_object["/Location"] == "Madrid"
    assert sig.signer_cert.subject == _asn1(live.signer.cert).subject

    if level.needs_validation_data:
        # the embedded DSS alone (revocation required, no fetching) is enough
        status = _status(data, live.pki, offline_dss=True)
    else:
        status = _status(data, live.pki)
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.bottom_line

    if level is PadesLevel.B_B:
        assert status.timestamp_validity is None
    else:
        ts = status.timestamp_validity
        assert ts is not None and ts.intact and ts.valid and ts.trusted

    dss = reader.root.get("/DSS")
    if level.needs_validation_data:
        assert dss is not None
        dss = dss.get_object()
        assert len(dss["/Certs"]) >= 3  # signer, signers CA, TSA (and the root)
        assert len(dss.get("/CRLs", ())) + len(dss.get("/OCSPs", ())) >= 2
    else:
        assert dss is None

    timestamps = reader.embedded_timestamp_signatures
    if level is PadesLevel.B_LTA:
        [doc_ts] = timestamps
        assert doc_ts.sig_object["/SubFilter"] == "/ETSI.RFC3161"
        ts_status = validate_pdf_timestamp(doc_ts, validation_context=_context(live.pki, reader))
        assert ts_status.intact and ts_status.valid and ts_status.trusted
    else:
        assert timestamps == []


def test_b_lt_without_the_dss_needs_fetching(signed: dict[PadesLevel, bytes], live: Live) -> None:
    """Control for the offline check above: with `require` and no DSS, validation fails."""
    reader = PdfFileReader(BytesIO(signed[PadesLevel.B_T]))
    assert "/DSS" not in reader.root
    context = ValidationContext(
        trust_roots=[_asn1(live.pki.root())],
        allow_fetching=False,
        revocation_mode="require",
        crls=[],
        ocsps=[],
    )
    status = validate_pdf_signature(reader.embedded_regular_signatures[0], context)
    assert status.intact and status.valid and not status.trusted


# --- the visible box --------------------------------------------------------------


def _widget(data: bytes) -> tuple[int, list[float]]:
    reader = PdfFileReader(BytesIO(data))
    field = reader.embedded_regular_signatures[0].sig_field
    pages = [reader.find_page_for_modification(i)[0] for i in range(3)]
    page_refs = [p.idnum for p in pages]
    rect = [float(v) for v in field["/Rect"]]
    return page_refs.index(field.raw_get("/P").idnum) + 1, rect


def test_visible_box_on_the_requested_page(signed: dict[PadesLevel, bytes]) -> None:
    page, rect = _widget(signed[PadesLevel.B_B])
    assert page == 2
    assert rect == [50, 50, 250, 120]
    reader = PdfFileReader(BytesIO(signed[PadesLevel.B_B]))
    field = reader.embedded_regular_signatures[0].sig_field
    appearance = field["/AP"]["/N"]
    assert appearance.data  # something is drawn


def test_invisible_by_default(live: Live) -> None:
    data = sign_pdf(make_pdf(1), live.signer)
    field = PdfFileReader(BytesIO(data)).embedded_regular_signatures[0].sig_field
    assert [float(v) for v in field["/Rect"]] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "text", ["1,50,50,250", "x,1,2,3,4", "0,50,50,250,120", "1,250,50,50,120", "1,-5,0,9,9"]
)
def test_bad_visible_box(text: str) -> None:
    with pytest.raises(SigningError, match="signature box"):
        VisibleBox.parse(text)


def test_visible_box_beyond_the_last_page(live: Live) -> None:
    with pytest.raises(SigningError, match="page 4, but the PDF has 3 page"):
        sign_pdf(make_pdf(3), live.signer, visible=VisibleBox(4, 10, 10, 100, 60))


# --- signing twice, field names, key options ----------------------------------------


@needs_pdfsig
def test_signing_twice_keeps_both_valid(
    signed: dict[PadesLevel, bytes], live: Live, tmp_path: Path
) -> None:
    first = signed[PadesLevel.B_T]
    ar = signer_for(live.pki, "AR-MJ")
    twice = sign_pdf(first, ar, level=PadesLevel.B_T, timestamper=live.tsa)
    assert twice.startswith(first)  # an incremental update
    reader = PdfFileReader(BytesIO(twice))
    sigs = reader.embedded_regular_signatures
    assert [s.field_name for s in sigs] == ["Signature1", "Signature2"]
    context = _context(live.pki)
    for sig in sigs:
        status = validate_pdf_signature(sig, context, ts_validation_context=context)
        assert status.intact and status.valid and status.trusted
        assert status.docmdp_ok, status.pretty_print_details()
    blocks = _signatures(_pdfsig(twice, tmp_path))
    assert len(blocks) == 2
    assert all("Signature is Valid." in b for b in blocks)


def test_field_name_and_string_level(live: Live) -> None:
    data = sign_pdf(make_pdf(1), live.signer, level="B-B", field_name="Clerk")  # type: ignore[arg-type]
    [sig] = PdfFileReader(BytesIO(data)).embedded_regular_signatures
    assert sig.field_name == "Clerk"


def test_unknown_level(es_signer: Signer) -> None:
    with pytest.raises(SigningError, match="unknown PAdES level 'B-LTV'"):
        sign_pdf(make_pdf(1), es_signer, level="B-LTV")  # type: ignore[arg-type]


def test_a_pkcs12_signer(live: Live) -> None:
    signer = load_signer_p12(live.pki.p12_path("CO-FGN").read_bytes(), None)
    data = sign_pdf(make_pdf(1), signer, level=PadesLevel.B_T, timestamper=live.tsa)
    status = _status(data, live.pki)
    assert status.bottom_line


# --- bad input: a SigningError with a message, never a traceback ------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encrypt_pdf(make_pdf(1)), "encrypted"),
        (make_pdf(2)[:-300], "cannot be read"),
        (make_pdf(2)[:400], "cannot be read"),
        (b"<?xml version='1.0'?><doc/>", "not a PDF"),
        (b"", "not a PDF"),
        (b"%PDF-1.7\n" + b"\x00" * 200, "cannot be read"),
    ],
    ids=["encrypted", "truncated-tail", "truncated-half", "xml", "empty", "header-only"],
)
def test_bad_pdf(data: bytes, message: str, es_signer: Signer) -> None:
    with pytest.raises(SigningError, match=message):
        sign_pdf(data, es_signer)


@pytest.mark.parametrize("level", [PadesLevel.B_T, PadesLevel.B_LT, PadesLevel.B_LTA])
def test_levels_above_b_b_need_a_tsa(level: PadesLevel, es_signer: Signer) -> None:
    with pytest.raises(SigningError, match="needs a time-stamping authority"):
        sign_pdf(make_pdf(1), es_signer, level=level)


@pytest.mark.parametrize("level", [PadesLevel.B_LT, PadesLevel.B_LTA])
def test_long_term_levels_need_trust_anchors(level: PadesLevel, live: Live) -> None:
    with pytest.raises(SigningError, match="validation data"):
        sign_pdf(make_pdf(1), live.signer, level=level, timestamper=live.tsa)


def test_tsa_down(es_signer: Signer) -> None:
    down = HttpTimeStamper("http://127.0.0.1:9/tsa", timeout=2)
    with pytest.raises(SigningError, match="unreachable"):
        sign_pdf(make_pdf(1), es_signer, level=PadesLevel.B_T, timestamper=down)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (TsaMode.HTTP_500, "HTTP 500"),
        (TsaMode.GARBAGE, "garbage"),
        (TsaMode.REJECTION, "refused the request"),
        (TsaMode.WRONG_IMPRINT, "imprint"),
        (TsaMode.WRONG_NONCE, "nonce"),
    ],
)
def test_bad_tsa_answers(mode: TsaMode, message: str, pki: DevPKI, es_signer: Signer) -> None:
    with (
        tsa_server(pki.cert("tsa"), pki.key("tsa"), mode=mode) as url,
        pytest.raises(SigningError, match=message),
    ):
        sign_pdf(make_pdf(1), es_signer, level=PadesLevel.B_T, timestamper=HttpTimeStamper(url))


def test_a_tsa_without_the_timestamping_key_usage(pki: DevPKI, es_signer: Signer) -> None:
    with (
        tsa_server(pki.cert("ES-MJ"), pki.key("ES-MJ")) as url,
        pytest.raises(SigningError, match=r"bad token: .* extended key usage"),
    ):
        sign_pdf(make_pdf(1), es_signer, level=PadesLevel.B_T, timestamper=HttpTimeStamper(url))


def test_b_lt_when_revocation_data_is_unavailable(tmp_path: Path) -> None:
    pki = create_dev_pki(
        tmp_path / "pki", crl_url="http://127.0.0.1:9/crl", ocsp_url="http://127.0.0.1:9/ocsp"
    )
    engine = TrustEngine(TrustPolicy(anchors=(pki.root(),), fetch_timeout=2))
    with (
        tsa_server(pki.cert("tsa"), pki.key("tsa")) as url,
        pytest.raises(SigningError, match="validation data for B-LT"),
    ):
        sign_pdf(
            make_pdf(1),
            signer_for(pki, "ES-MJ"),
            level=PadesLevel.B_LT,
            timestamper=HttpTimeStamper(url),
            validation=engine,
        )


def test_b_lt_with_an_untrusted_signer(live: Live, pki: DevPKI) -> None:
    """A signer from another PKI than the engine's anchors: no path, no B-LT."""
    with pytest.raises(SigningError, match="validation data for B-LT"):
        sign_pdf(
            make_pdf(1),
            signer_for(pki, "ES-MJ"),
            level=PadesLevel.B_LT,
            timestamper=live.tsa,
            validation=live.engine,
        )


def test_b_lt_with_an_untrusted_tsa(live: Live, pki: DevPKI, engine: TrustEngine) -> None:
    """The signer chains to the engine's anchor, the TSA (another PKI's) does not."""
    with pytest.raises(SigningError, match="validation data for B-LT"):
        sign_pdf(
            make_pdf(1),
            signer_for(pki, "ES-MJ"),
            level=PadesLevel.B_LT,
            timestamper=live.tsa,
            validation=engine,
        )


# --- Rogatory's own verifier -------------------------------------------------------------


def _verify_pdf() -> Any:
    module = pytest.importorskip("signing.pades_verify", reason="the PAdES verifier is not here")
    return module.verify_pdf


@pytest.mark.parametrize("level", list(PadesLevel))
def test_rogatory_verifier_passes_at_the_requested_level(
    level: PadesLevel, signed: dict[PadesLevel, bytes], live: Live
) -> None:
    report = _verify_pdf()(signed[level], live.engine, path=f"{level}.pdf")
    assert report.verdict.indication == "TOTAL-PASSED", report.verdict.reason
    levels = [s.level for s in report.signatures if s.signer and "ES-MJ" in s.signer]
    assert levels == [f"PAdES-{level}"]


def test_rogatory_verifier_passes_a_document_signed_twice(
    signed: dict[PadesLevel, bytes], live: Live
) -> None:
    ar = signer_for(live.pki, "AR-MJ")
    twice = sign_pdf(
        signed[PadesLevel.B_LTA],
        ar,
        level=PadesLevel.B_LT,
        timestamper=live.tsa,
        validation=live.engine,
        visible=VisibleBox(1, 300, 50, 500, 120),
    )
    report = _verify_pdf()(twice, live.engine, path="twice.pdf")
    assert report.verdict.indication == "TOTAL-PASSED", report.verdict.reason
