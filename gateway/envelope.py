"""The envelope: validation (XSD, then profile rules) and the plain data read from it.

No I/O beyond loading the schema, lazily and once per thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from lxml import etree

from gateway.profile import Problem, check_profile, element_path, find, find_text, parse_time, q
from gateway.xsd import schema_for
from schemas import ENVELOPE_NS, schema_path
from signing.errors import InputError
from signing.xmlparse import parse_xml

__all__ = [
    "AttachmentRef",
    "AuthorityRef",
    "Confidentiality",
    "ConfidentialityLevel",
    "Envelope",
    "EnvelopeError",
    "LegalBasis",
    "MessageKind",
    "Problem",
    "RequestType",
    "Urgency",
    "UrgencyLevel",
    "check_envelope",
    "validate_envelope",
]


class MessageKind(StrEnum):
    REQUEST = "request"
    SUPPLEMENTARY_REQUEST = "supplementary-request"
    CLARIFICATION_REQUEST = "clarification-request"
    CLARIFICATION_RESPONSE = "clarification-response"
    EXECUTION_RESULT = "execution-result"
    PARTIAL_EXECUTION = "partial-execution"
    REFUSAL = "refusal"
    POSTPONEMENT = "postponement"
    WITHDRAWAL = "withdrawal"
    NOTICE = "notice"


class RequestType(StrEnum):
    MUTUAL_LEGAL_ASSISTANCE = "mutual-legal-assistance"
    EXTRADITION = "extradition"
    PROVISIONAL_ARREST = "provisional-arrest"
    TRANSFER_OF_PROCEEDINGS = "transfer-of-proceedings"
    TRANSFER_OF_SENTENCED_PERSONS = "transfer-of-sentenced-persons"
    CONFISCATION_AND_ASSET_RECOVERY = "confiscation-and-asset-recovery"
    PRESERVATION_OF_ELECTRONIC_EVIDENCE = "preservation-of-electronic-evidence"
    PRODUCTION_OF_ELECTRONIC_EVIDENCE = "production-of-electronic-evidence"
    VIDEOCONFERENCE_HEARING = "videoconference-hearing"
    SERVICE_OF_DOCUMENTS = "service-of-documents"
    JOINT_INVESTIGATION_TEAM = "joint-investigation-team"
    OTHER = "other"


class UrgencyLevel(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"
    VERY_URGENT = "very-urgent"


class ConfidentialityLevel(StrEnum):
    NONE = "none"
    CONFIDENTIAL = "confidential"
    STRICTLY_CONFIDENTIAL = "strictly-confidential"


@dataclass(frozen=True)
class AuthorityRef:
    id: str
    country: str
    name: str


@dataclass(frozen=True)
class LegalBasis:
    instrument: str
    article: str | None


@dataclass(frozen=True)
class Urgency:
    level: UrgencyLevel
    reason: str | None
    deadline: datetime | None


@dataclass(frozen=True)
class Confidentiality:
    level: ConfidentialityLevel
    statement: str | None


@dataclass(frozen=True)
class AttachmentRef:
    """An attachment as the signed manifest binds it: name, type, size, SHA-256."""

    id: str
    file_name: str
    media_type: str
    size: int
    sha256_hex: str
    content_id: str | None = None


class EnvelopeError(InputError):
    """The envelope is not valid; ``problems`` says every place where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        listing = "; ".join(str(p) for p in self.problems)
        super().__init__(
            f"the envelope is not valid ({count} problem{'s' * (count != 1)}): {listing}"
        )


@dataclass(frozen=True)
class Envelope:
    """The header and attachment manifest of a valid envelope, as plain data."""

    message_id: str
    conversation_id: str
    in_reply_to: str | None
    kind: MessageKind
    created: datetime
    sender: AuthorityRef
    recipient: AuthorityRef
    request_type: RequestType
    legal_basis: tuple[LegalBasis, ...]
    urgency: Urgency
    confidentiality: Confidentiality
    language: str
    attachments: tuple[AttachmentRef, ...]

    @classmethod
    def from_xml(cls, root: Any) -> Envelope:
        """Read a root that passed ``validate_envelope``; EnvelopeError if parts are missing."""
        header = _child(root, "Header")
        deadline = _optional(header, "Urgency/Deadline")
        return cls(
            message_id=_required(header, "MessageId"),
            conversation_id=_required(header, "ConversationId"),
            in_reply_to=_optional(header, "InReplyTo"),
            kind=_enum(MessageKind, header, "MessageKind"),
            created=parse_time(_required(header, "Created")),
            sender=_authority(_child(header, "Sender")),
            recipient=_authority(_child(header, "Recipient")),
            request_type=_enum(RequestType, header, "RequestType"),
            legal_basis=tuple(
                LegalBasis(_required(basis, "Instrument"), _optional(basis, "Article"))
                for basis in header.iterfind(q("LegalBasis"))
            ),
            urgency=Urgency(
                level=_enum(UrgencyLevel, header, "Urgency/Level"),
                reason=_optional(header, "Urgency/Reason"),
                deadline=None if deadline is None else parse_time(deadline),
            ),
            confidentiality=Confidentiality(
                level=_enum(ConfidentialityLevel, header, "Confidentiality/Level"),
                statement=_optional(header, "Confidentiality/Statement"),
            ),
            language=_required(header, "Language"),
            attachments=tuple(_attachment(a) for a in root.iterfind(q("Attachments/Attachment"))),
        )


def validate_envelope(root: Any) -> list[Problem]:
    """Every problem of ``root``: the XSD's, or if it passed, the profile rules'."""
    schema = _schema()
    if schema.validate(root):
        return check_profile(root)
    return [_xsd_problem(root, entry) for entry in schema.error_log]


def check_envelope(data: bytes) -> tuple[Any, Envelope]:
    """Parse (hardened), validate and read ``data``; EnvelopeError lists every problem.

    Hostile or malformed XML raises the parser's ``XMLInputError``.
    """
    root = parse_xml(data)
    problems = validate_envelope(root)
    if problems:
        raise EnvelopeError(problems)
    return root, Envelope.from_xml(root)


# ---- schema -----------------------------------------------------------------


def _schema() -> Any:
    return schema_for(schema_path())


# "Element '{ns}Person', attribute 'foo': The attribute 'foo' is not allowed."
_SUBJECT = re.compile(r"^Element '[^']*'(?:, attribute '(?P<attr>[^']*)')?: ")
_MISSING_ONE = re.compile(r"^Missing child element\(s\)\. Expected is \( (?P<name>[\w.\-]+) \)\.$")
_OUR_NS = "{" + ENVELOPE_NS + "}"


def _xsd_problem(root: Any, entry: Any) -> Problem:
    element = _element_at(root, entry)
    path = element_path(element) if element is not None else f"(line {entry.line})"
    message = str(entry.message).replace(_OUR_NS, "")
    subject = _SUBJECT.match(message)
    if subject:
        message = message[subject.end() :]
        if subject["attr"]:
            path += f"/@{subject['attr']}"
    missing = _MISSING_ONE.match(message)
    if missing:
        # Point at the absent element itself, as the profile rules do.
        path += f"/{missing['name']}"
        message = f"the required element {missing['name']} is missing"
    return Problem(path, message, "xsd")


def _element_at(root: Any, entry: Any) -> Any | None:
    # libxml2 reports positional paths (/*/*[1]/*[3], ns:Name for prefixed
    # elements); resolve them on the same tree.
    prefixes = {p: uri for e in root.iter() for p, uri in e.nsmap.items() if p}
    try:
        found = root.getroottree().xpath(entry.path, namespaces=prefixes) if entry.path else []
    except etree.XPathError:
        found = []
    if len(found) == 1 and isinstance(found[0], etree._Element):
        return found[0]
    # A prefix bound twice makes the path ambiguous: fall back to the line.
    return next(
        (e for e in root.iter() if isinstance(e.tag, str) and e.sourceline == entry.line), None
    )


# ---- reading ----------------------------------------------------------------

_E = TypeVar("_E", bound=StrEnum)


def _missing(parent: Any, path: str) -> EnvelopeError:
    where = f"{element_path(parent)}/{path}"
    return EnvelopeError([Problem(where, f"the element {path} is missing", "read")])


def _child(parent: Any, path: str) -> Any:
    element = find(parent, path)
    if element is None:
        raise _missing(parent, path)
    return element


def _optional(parent: Any, path: str) -> str | None:
    value = find_text(parent, path)
    return None if value is None else value.strip()


def _required(parent: Any, path: str) -> str:
    value = _optional(parent, path)
    if value is None:
        raise _missing(parent, path)
    return value


def _enum(kind: type[_E], parent: Any, path: str) -> _E:
    value = _required(parent, path)
    try:
        return kind(value)
    except ValueError:
        where = f"{element_path(parent)}/{path}"
        raise EnvelopeError([Problem(where, f"unknown value {value!r}", "read")]) from None


def _authority(element: Any) -> AuthorityRef:
    return AuthorityRef(
        id=_required(element, "AuthorityId"),
        country=_required(element, "Country"),
        name=_required(element, "Name"),
    )


def _attachment(element: Any) -> AttachmentRef:
    content_id = element.get("ContentId")
    return AttachmentRef(
        id=str(element.get("Id", "")),
        file_name=str(element.findtext(q("FileName"), "")),
        media_type=_required(element, "MediaType"),
        size=int(_required(element, "Size")),
        sha256_hex=_required(element, "Digest"),
        content_id=None if content_id is None else str(content_id),
    )
