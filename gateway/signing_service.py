"""Signing a document as a user asks: XAdES for XML, PAdES for PDF, kind by content."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from signing.errors import SigningError
from signing.keys import Signer

from .verification import sniff_kind

XML_LEVELS = ("B-B", "B-T")
PDF_LEVELS = ("B-B", "B-T", "B-LT", "B-LTA")


@dataclass(frozen=True)
class SignRequest:
    """What to produce; ``level`` None means B-T with a TSA, else B-B."""

    level: str | None = None
    tsa_url: str | None = None
    trust: tuple[Path, ...] = ()
    visible: str | None = None
    field_name: str | None = None
    reason: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class Signed:
    data: bytes
    kind: str
    level: str


def sign_document(data: bytes, signer: Signer, request: SignRequest) -> Signed:
    """Sign ``data`` (XML or PDF) as ``request`` says, or raise ``SigningError`` saying why."""
    from signing.timestamp import HttpTimeStamper

    kind = sniff_kind(data)
    level = request.level or ("B-T" if request.tsa_url else "B-B")
    allowed = PDF_LEVELS if kind == "pdf" else XML_LEVELS
    if level not in allowed:
        raise SigningError(f"level {level} is not available for {kind.upper()}: use {allowed}")
    stamper = HttpTimeStamper(request.tsa_url) if request.tsa_url else None
    if kind == "xml":
        if request.visible or request.field_name or request.reason or request.location:
            raise SigningError("--visible, --field, --reason and --location are for PDFs")
        from signing.xades_sign import Level, sign_xml

        return Signed(sign_xml(data, signer, level=Level(level), timestamper=stamper), kind, level)
    from signing.pades_sign import PadesLevel, VisibleBox, sign_pdf

    from .verification import build_engine

    engine = build_engine(request.trust) if level in ("B-LT", "B-LTA") else None
    if level in ("B-LT", "B-LTA") and engine is None:
        raise SigningError(f"{level} embeds validation data: give the trust anchors with --trust")
    signed = sign_pdf(
        data,
        signer,
        level=PadesLevel(level),
        timestamper=stamper,
        validation=engine,
        visible=VisibleBox.parse(request.visible) if request.visible else None,
        field_name=request.field_name,
        reason=request.reason,
        location=request.location,
    )
    return Signed(signed, kind, level)
