"""Profile rules: what the envelope XSD cannot say, checked after it passed.

Each rule is a small function of the validated root that yields
``(path, message)``; adding a rule is one function plus one line in
``PROFILE_RULES``. The rule's name in a ``Problem`` is the function's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from lxml import etree

from schemas import ENVELOPE_NS


@dataclass(frozen=True)
class Problem:
    """One reason an envelope is refused, at an element path like ``/Envelope/Header``."""

    path: str
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


Rule = Callable[[Any], Iterable[tuple[str, str]]]


@cache
def q(path: str) -> str:
    """``Header/Urgency`` in Clark notation of the envelope namespace, for find()."""
    return "/".join(f"{{{ENVELOPE_NS}}}{step}" for step in path.split("/"))


@cache
def _compiled(path: str) -> etree.ETXPath:
    return etree.ETXPath(q(path))  # evaluators lock around each call: shared by threads


def find(parent: Any, path: str) -> Any | None:
    """``parent.find(q(path))``, with the path compiled once (find() parses it on every call)."""
    found: Any = _compiled(path)(parent)
    return found[0] if found else None


def find_text(parent: Any, path: str) -> str | None:
    """``parent.findtext(q(path))``: the first match's text ("" if it has none), or None."""
    element = find(parent, path)
    return None if element is None else str(element.text or "")


def element_path(element: Any) -> str:
    """Readable path of ``element``: local names, ``[n]`` only where a name repeats."""
    steps: list[str] = []
    while element is not None:
        parent = element.getparent()
        step = _display_name(element)
        if parent is not None:
            same = list(parent.iterchildren(element.tag))
            if len(same) > 1:
                step += f"[{same.index(element) + 1}]"
        steps.append(step)
        element = parent
    return "/" + "/".join(reversed(steps))


def _display_name(element: Any) -> str:
    name = etree.QName(element)
    if name.namespace == ENVELOPE_NS:
        return str(name.localname)
    if element.prefix:
        return f"{element.prefix}:{name.localname}"
    return str(name.text)


def _text(root: Any, path: str) -> str | None:
    value = find_text(root, path)
    return None if value is None else value.strip()


def _request_body(root: Any, *request_types: str) -> Any | None:
    """The body of an initial request (of one of ``request_types``, if given)."""
    if _text(root, "Header/MessageKind") != "request":
        return None
    if request_types and _text(root, "Header/RequestType") not in request_types:
        return None
    body = find(root, "Body")
    return body if body is not None and find(body, "RequestingAuthority") is not None else None


def _measures(body: Any, *types: str) -> list[Any]:
    return [m for m in body.iterfind(q("AssistanceSought/Measure")) if m.get("type") in types]


def _persons(body: Any, role: str) -> list[Any]:
    return [p for p in body.iterfind(q("PersonsConcerned/Person")) if p.get("role") == role]


_MEASURE = "/Envelope/Body/AssistanceSought/Measure"
_PERSON = "/Envelope/Body/PersonsConcerned/Person"


# ---- rules on every message -------------------------------------------------


def in_reply_to_for_replies(root: Any) -> Iterator[tuple[str, str]]:
    kind = _text(root, "Header/MessageKind")
    reply_to = _text(root, "Header/InReplyTo")
    if kind != "request" and reply_to is None:
        yield (
            "/Envelope/Header/InReplyTo",
            f"a {kind} answers an earlier message: InReplyTo is required",
        )
    if reply_to is not None and reply_to == _text(root, "Header/MessageId"):
        yield "/Envelope/Header/InReplyTo", "a message cannot reply to itself"


def sender_is_not_recipient(root: Any) -> Iterator[tuple[str, str]]:
    sender = _text(root, "Header/Sender/AuthorityId")
    if sender == _text(root, "Header/Recipient/AuthorityId"):
        yield "/Envelope/Header/Recipient/AuthorityId", f"sender and recipient are both {sender}"


def urgency_has_reason_and_deadline(root: Any) -> Iterator[tuple[str, str]]:
    level = _text(root, "Header/Urgency/Level")
    if level == "normal":
        return
    if _text(root, "Header/Urgency/Reason") is None:
        yield "/Envelope/Header/Urgency/Reason", f"urgency {level} needs a reason"
    deadline = _text(root, "Header/Urgency/Deadline")
    created = _text(root, "Header/Created")
    if deadline is None:
        yield "/Envelope/Header/Urgency/Deadline", f"urgency {level} needs a deadline"
    elif created is not None and parse_time(deadline) <= parse_time(created):
        yield (
            "/Envelope/Header/Urgency/Deadline",
            f"the deadline {deadline} is not after the creation time {created}",
        )


def request_carries_request_contents(root: Any) -> Iterator[tuple[str, str]]:
    kind = _text(root, "Header/MessageKind")
    if (
        kind in ("request", "supplementary-request")
        and root.find(q("Body/Communication")) is not None
    ):
        yield (
            "/Envelope/Body/Communication",
            f"a {kind} carries the contents of UNTOC art. 18(15), not a Communication",
        )


def attachment_names_safe_and_unique(root: Any) -> Iterator[tuple[str, str]]:
    # Compared case-folded: the SFTP drop or a clerk's disk may be case-insensitive.
    first_use: dict[str, Any] = {}
    for name_element in root.iterfind(q("Attachments/Attachment/FileName")):
        name = name_element.text or ""
        unsafe = _unsafe_file_name(name)
        if unsafe:
            yield element_path(name_element), f"the file name {name!r} {unsafe}"
        key = name.casefold()
        if key in first_use:
            earlier = element_path(first_use[key])
            yield element_path(name_element), f"the file name {name!r} is already used at {earlier}"
        else:
            first_use[key] = name_element


def _unsafe_file_name(name: str) -> str | None:
    if any(sep in name for sep in "/\\:"):
        return "contains a path separator"
    if name.startswith("."):
        return "starts with a dot"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if name != name.strip():
        return "starts or ends with white space"
    return None


# ---- rules on the contents of a request, per request type -------------------


def summary_of_facts_required(root: Any) -> Iterator[tuple[str, str]]:
    body = _request_body(root)
    if body is None or _text(root, "Header/RequestType") == "service-of-documents":
        return
    if body.find(q("SummaryOfFacts")) is None:
        yield (
            "/Envelope/Body/SummaryOfFacts",
            "a summary of the relevant facts is required (UNTOC art. 18(15)(c)), "
            "except for service of documents",
        )


def person_sought_named(root: Any) -> Iterator[tuple[str, str]]:
    body = _request_body(root, "extradition", "provisional-arrest")
    if body is not None and not _persons(body, "person-sought"):
        kind = _text(root, "Header/RequestType")
        yield (
            _PERSON,
            f"a {kind} request names the person sought (a Person with role person-sought)",
        )


def assets_named_for_confiscation(root: Any) -> Iterator[tuple[str, str]]:
    body = _request_body(root, "confiscation-and-asset-recovery")
    if body is None or body.find(q("Assets")) is not None:
        return
    if not _measures(body, "freezing-of-assets", "confiscation"):
        yield (
            _MEASURE,
            "an asset recovery request seeks freezing-of-assets or confiscation, or names Assets",
        )


# Request type -> the measure that carries it, for electronic evidence.
_DATA_MEASURE = {
    "preservation-of-electronic-evidence": "preservation-of-data",
    "production-of-electronic-evidence": "production-of-data",
}


def electronic_data_identified(root: Any) -> Iterator[tuple[str, str]]:
    body = _request_body(root, *_DATA_MEASURE)
    if body is None:
        return
    measure_type = _DATA_MEASURE[_text(root, "Header/RequestType") or ""]
    measures = _measures(body, measure_type)
    if not measures:
        yield _MEASURE, f"the request needs a measure of type {measure_type}"
    for measure in measures:
        if not any(_names_data(target) for target in measure.iterfind(q("DataTarget"))):
            yield (
                element_path(measure) + "/DataTarget",
                "the data are not identified: name a ServiceProvider or an AccountIdentifier",
            )


def _names_data(target: Any) -> bool:
    return bool(_text(target, "ServiceProvider") or _text(target, "AccountIdentifier"))


def service_has_document_and_addressee(root: Any) -> Iterator[tuple[str, str]]:
    body = _request_body(root, "service-of-documents")
    if body is None:
        return
    if not _measures(body, "service-of-document"):
        yield _MEASURE, "a service of documents request has a measure of type service-of-document"
    if not _persons(body, "addressee"):
        yield _PERSON, "a service of documents request names the addressee (role addressee)"
    if root.find(q("Attachments/Attachment")) is None:
        yield "/Envelope/Attachments/Attachment", "the document to be served is attached"


PROFILE_RULES: tuple[Rule, ...] = (
    in_reply_to_for_replies,
    sender_is_not_recipient,
    urgency_has_reason_and_deadline,
    request_carries_request_contents,
    attachment_names_safe_and_unique,
    summary_of_facts_required,
    person_sought_named,
    assets_named_for_confiscation,
    electronic_data_identified,
    service_has_document_and_addressee,
)


def check_profile(root: Any, rules: Iterable[Rule] = PROFILE_RULES) -> list[Problem]:
    """Every problem the profile rules find in an XSD-valid envelope."""
    return [
        Problem(path, message, rule.__name__.replace("_", "-"))
        for rule in rules
        for path, message in rule(root)
    ]


def parse_time(value: str) -> datetime:
    """An XSD-valid ``ZonedDateTime`` (the schema's pattern makes this total)."""
    return datetime.fromisoformat(value)
