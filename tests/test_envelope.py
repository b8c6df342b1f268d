"""Envelope validation: XSD problems with paths, each profile rule, hostile input."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from gateway.envelope import Envelope, EnvelopeError, Problem, check_envelope, validate_envelope
from gateway.profile import PROFILE_RULES, check_profile, q
from schemas import ENVELOPE_NS, examples_dir
from signing.errors import InputError, XMLInputError
from signing.xmlparse import parse_xml

PROJECT = Path(__file__).resolve().parents[1]
ATTACKS = PROJECT / "../shared/conformance" / "xml-attacks"
DS = "http://www.w3.org/2000/09/xmldsig#"


def load(name: str = "mla-request.xml") -> Any:
    return parse_xml((examples_dir() / name).read_bytes())


def find(root: Any, path: str) -> Any:
    element = root.find(q(path))
    assert element is not None, path
    return element


def remove(root: Any, path: str) -> None:
    element = find(root, path)
    element.getparent().remove(element)


def set_text(root: Any, path: str, text: str) -> None:
    find(root, path).text = text


def where(root: Any) -> set[tuple[str, str]]:
    return {(p.path, p.rule) for p in validate_envelope(root)}


def as_reply(root: Any, kind: str) -> Any:
    """Turn a request into a reply of ``kind`` with a Communication body."""
    set_text(root, "Header/MessageKind", kind)
    body = find(root, "Body")
    for child in list(body):
        body.remove(child)
    communication = etree.SubElement(body, q("Communication"))
    etree.SubElement(communication, q("Subject")).text = "Ejecución"
    etree.SubElement(communication, q("Text")).text = "Se remiten las actuaciones."
    return root


# ---- XSD --------------------------------------------------------------------


def test_missing_element_is_reported_at_its_own_path() -> None:
    root = load()
    remove(root, "Header/Language")
    [problem] = validate_envelope(root)
    assert (problem.path, problem.rule) == ("/Envelope/Header/Language", "xsd")
    assert "Language" in problem.message and "{" not in problem.message


@pytest.mark.parametrize(
    ("path", "value", "reported"),
    [
        ("Header/MessageId", "not-a-uuid", "/Envelope/Header/MessageId"),
        ("Header/MessageId", "0D0896EE-3CF1-4469-A704-B57C32B8ADA9", "/Envelope/Header/MessageId"),
        ("Header/ConversationId", "1234", "/Envelope/Header/ConversationId"),
        ("Header/RequestType", "letters-rogatory", "/Envelope/Header/RequestType"),
        ("Header/MessageKind", "reminder", "/Envelope/Header/MessageKind"),
        ("Header/Created", "2025-03-04T10:15:00", "/Envelope/Header/Created"),
        ("Header/Created", "2025-03-04T24:00:00Z", "/Envelope/Header/Created"),
        ("Header/Sender/Country", "ESP", "/Envelope/Header/Sender/Country"),
        ("Header/Language", "Spanish", "/Envelope/Header/Language"),
        ("Attachments/Attachment/Size", "-1", "/Envelope/Attachments/Attachment[1]/Size"),
    ],
)
def test_bad_value_is_reported_at_its_path(path: str, value: str, reported: str) -> None:
    root = load()
    set_text(root, path, value)
    assert where(root) == {(reported, "xsd")}


def test_digest_of_wrong_length_is_reported() -> None:
    root = load()
    digest = root.findall(q("Attachments/Attachment/Digest"))[1]
    digest.text = digest.text[:63]
    [problem] = validate_envelope(root)
    assert problem.path == "/Envelope/Attachments/Attachment[2]/Digest"
    assert digest.text in problem.message


def test_digest_algorithm_is_fixed_to_sha256() -> None:
    root = load()
    find(root, "Attachments/Attachment/Digest").set(
        "Algorithm", "http://www.w3.org/2000/09/xmldsig#sha1"
    )
    assert where(root) == {("/Envelope/Attachments/Attachment[1]/Digest/@Algorithm", "xsd")}


def test_unknown_attribute_is_reported_at_the_attribute() -> None:
    root = load()
    root.findall(q("Body/PersonsConcerned/Person"))[1].set("nickname", "x")
    assert where(root) == {("/Envelope/Body/PersonsConcerned/Person[2]/@nickname", "xsd")}


def test_duplicate_attachment_ids_are_refused() -> None:
    root = load()
    root.findall(q("Attachments/Attachment"))[1].set("Id", "att-1")
    assert where(root) == {("/Envelope/Attachments/Attachment[2]", "xsd")}


def test_every_xsd_problem_is_reported_and_profile_waits_for_the_xsd() -> None:
    root = load()
    set_text(root, "Header/MessageId", "x")
    remove(root, "Body/Purpose")
    set_text(root, "Header/Recipient/AuthorityId", "ES-MJ")  # a profile problem, not yet checked
    assert {p.path for p in validate_envelope(root)} == {
        "/Envelope/Header/MessageId",
        "/Envelope/Body/Contacts",  # libxml2 names the element found where Purpose belongs
    }
    assert {p.rule for p in validate_envelope(root)} == {"xsd"}


def test_wrong_version_is_refused() -> None:
    root = load()
    root.set("version", "2.0")
    assert where(root) == {("/Envelope/@version", "xsd")}


# ---- the signature slot -----------------------------------------------------


def dummy_signature() -> Any:
    signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS}, Id="sig-1")
    etree.SubElement(signature, f"{{{DS}}}SignedInfo")
    etree.SubElement(signature, f"{{{DS}}}SignatureValue").text = "AAAA"
    qp = etree.SubElement(etree.SubElement(signature, f"{{{DS}}}Object"), "{urn:x}Whatever")
    qp.set("Target", "#sig-1")
    return signature


def test_signed_looking_envelope_still_validates() -> None:
    root = load()
    root.append(dummy_signature())
    assert validate_envelope(root) == []
    _, envelope = check_envelope(etree.tostring(root))
    assert envelope.message_id == "0d0896ee-3cf1-4469-a704-b57c32b8ada9"


def test_xades_signed_example_still_validates(signed_envelope: bytes) -> None:
    root, _ = check_envelope(signed_envelope)
    assert etree.QName(root[-1]).text == f"{{{DS}}}Signature"


def test_at_most_one_signature_and_only_as_the_last_child() -> None:
    twice = load()
    twice.append(dummy_signature())
    twice.append(dummy_signature())
    assert validate_envelope(twice)
    before_attachments = load()
    find(before_attachments, "Attachments").addprevious(dummy_signature())
    assert validate_envelope(before_attachments)


def test_foreign_element_in_the_signature_slot_is_refused_with_a_path() -> None:
    root = load()
    etree.SubElement(root, "{urn:evil}Extra", nsmap={"evil": "urn:evil"})
    [problem] = validate_envelope(root)
    assert problem.path == "/Envelope/evil:Extra"


# ---- profile rules ----------------------------------------------------------


def test_summary_of_facts_is_required_for_an_mla_request() -> None:
    root = load()
    remove(root, "Body/SummaryOfFacts")
    assert where(root) == {("/Envelope/Body/SummaryOfFacts", "summary-of-facts-required")}


def test_service_of_documents_needs_no_summary_of_facts() -> None:
    root = load("service-of-documents.xml")
    assert root.find(q("Body/SummaryOfFacts")) is None
    assert validate_envelope(root) == []


@pytest.mark.parametrize("request_type", ["extradition", "provisional-arrest"])
def test_extradition_and_provisional_arrest_name_the_person_sought(request_type: str) -> None:
    root = load("extradition-request.xml")
    set_text(root, "Header/RequestType", request_type)
    assert validate_envelope(root) == []
    find(root, "Body/PersonsConcerned/Person").set("role", "accused")
    assert where(root) == {("/Envelope/Body/PersonsConcerned/Person", "person-sought-named")}


@pytest.mark.parametrize("missing", ["Reason", "Deadline"])
def test_urgency_needs_reason_and_deadline(missing: str) -> None:
    root = load("extradition-request.xml")
    remove(root, f"Header/Urgency/{missing}")
    rule = "urgency-has-reason-and-deadline"
    assert where(root) == {(f"/Envelope/Header/Urgency/{missing}", rule)}


@pytest.mark.parametrize(
    ("deadline", "accepted"),
    [
        ("2025-04-22T21:40:01Z", True),
        ("2025-04-22T23:40:00+02:00", False),  # the same instant as Created (16:40-05:00)
        ("2025-04-01T00:00:00Z", False),
    ],
)
def test_deadline_is_after_created_across_time_zones(deadline: str, accepted: bool) -> None:
    root = load("extradition-request.xml")
    set_text(root, "Header/Urgency/Deadline", deadline)
    expected = (
        set()
        if accepted
        else {("/Envelope/Header/Urgency/Deadline", "urgency-has-reason-and-deadline")}
    )
    assert where(root) == expected


def test_normal_urgency_needs_neither_reason_nor_deadline() -> None:
    root = load()
    assert root.find(q("Header/Urgency/Deadline")) is None
    assert validate_envelope(root) == []


def test_asset_recovery_seeks_freezing_or_names_assets() -> None:
    root = load("confiscation-request.xml")
    remove(root, "Body/Assets")
    assert validate_envelope(root) == []  # the freezing measure suffices
    find(root, "Body/AssistanceSought/Measure").set("type", "provision-of-records")
    assert where(root) == {
        ("/Envelope/Body/AssistanceSought/Measure", "assets-named-for-confiscation")
    }


def test_preservation_request_has_a_preservation_measure() -> None:
    root = load("preservation-request.xml")
    find(root, "Body/AssistanceSought/Measure").set("type", "taking-of-evidence")
    assert where(root) == {
        ("/Envelope/Body/AssistanceSought/Measure", "electronic-data-identified")
    }


def test_preservation_request_identifies_the_data() -> None:
    root = load("preservation-request.xml")
    remove(root, "Body/AssistanceSought/Measure/DataTarget/ServiceProvider")
    assert validate_envelope(root) == []  # the account alone identifies the data
    remove(root, "Body/AssistanceSought/Measure/DataTarget/AccountIdentifier")
    assert where(root) == {
        ("/Envelope/Body/AssistanceSought/Measure/DataTarget", "electronic-data-identified")
    }


def test_production_request_has_a_production_measure() -> None:
    root = load("preservation-request.xml")
    set_text(root, "Header/RequestType", "production-of-electronic-evidence")
    assert where(root) == {
        ("/Envelope/Body/AssistanceSought/Measure", "electronic-data-identified")
    }
    find(root, "Body/AssistanceSought/Measure").set("type", "production-of-data")
    assert validate_envelope(root) == []


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: remove(r, "Attachments"), "/Envelope/Attachments/Attachment"),
        (
            lambda r: find(r, "Body/PersonsConcerned/Person").set("role", "accused"),
            "/Envelope/Body/PersonsConcerned/Person",
        ),
        (
            lambda r: find(r, "Body/AssistanceSought/Measure").set("type", "other"),
            "/Envelope/Body/AssistanceSought/Measure",
        ),
    ],
    ids=["no-attachment", "no-addressee", "no-service-measure"],
)
def test_service_of_documents_has_measure_addressee_and_document(change: Any, path: str) -> None:
    root = load("service-of-documents.xml")
    change(root)
    assert where(root) == {(path, "service-has-document-and-addressee")}


REPLY_KINDS = [
    "supplementary-request",
    "clarification-request",
    "clarification-response",
    "execution-result",
    "partial-execution",
    "refusal",
    "postponement",
    "withdrawal",
    "notice",
]


@pytest.mark.parametrize("kind", REPLY_KINDS)
def test_in_reply_to_is_required_for_every_kind_but_request(kind: str) -> None:
    root = load()
    if kind == "supplementary-request":
        set_text(root, "Header/MessageKind", kind)
    else:
        as_reply(root, kind)
    assert where(root) == {("/Envelope/Header/InReplyTo", "in-reply-to-for-replies")}
    find(root, "Header/ConversationId").addnext(etree.Element(q("InReplyTo")))
    set_text(root, "Header/InReplyTo", "ec1617d8-8c4b-461a-8a64-3cc5909dbe5e")
    assert validate_envelope(root) == []


def test_a_message_cannot_reply_to_itself() -> None:
    root = as_reply(load(), "notice")
    find(root, "Header/ConversationId").addnext(etree.Element(q("InReplyTo")))
    set_text(root, "Header/InReplyTo", find(root, "Header/MessageId").text)
    assert where(root) == {("/Envelope/Header/InReplyTo", "in-reply-to-for-replies")}


def test_a_request_carries_the_request_contents() -> None:
    root = as_reply(load(), "request")
    assert where(root) == {("/Envelope/Body/Communication", "request-carries-request-contents")}


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "sub/file.txt", "sub\\file.txt", "C:file.txt", ".hidden", " x.txt"]
)
def test_attachment_file_names_are_safe(name: str) -> None:
    root = load()
    root.findall(q("Attachments/Attachment/FileName"))[1].text = name
    assert where(root) == {
        ("/Envelope/Attachments/Attachment[2]/FileName", "attachment-names-safe-and-unique")
    }


def test_attachment_file_names_are_unique_ignoring_case() -> None:
    root = load()
    root.findall(q("Attachments/Attachment/FileName"))[1].text = "AUTO-juzgado-central-4.txt"
    [problem] = validate_envelope(root)
    assert problem.path == "/Envelope/Attachments/Attachment[2]/FileName"
    assert "/Envelope/Attachments/Attachment[1]/FileName" in problem.message


def test_sender_is_not_the_recipient() -> None:
    root = load()
    set_text(root, "Header/Recipient/AuthorityId", "ES-MJ")
    assert where(root) == {("/Envelope/Header/Recipient/AuthorityId", "sender-is-not-recipient")}


def test_a_new_rule_is_one_function() -> None:
    def spanish_only(root: Any) -> Iterator[tuple[str, str]]:
        if root.findtext(q("Header/Language")) != "es":
            yield "/Envelope/Header/Language", "only Spanish"

    assert check_profile(load(), (*PROFILE_RULES, spanish_only)) == []
    assert check_profile(load("service-of-documents.xml"), (*PROFILE_RULES, spanish_only)) == [
        Problem("/Envelope/Header/Language", "only Spanish", "spanish-only")
    ]


# ---- check_envelope and bad input -------------------------------------------


def test_check_envelope_raises_with_every_problem() -> None:
    root = load()
    remove(root, "Body/SummaryOfFacts")
    set_text(root, "Header/Recipient/AuthorityId", "ES-MJ")
    with pytest.raises(EnvelopeError) as caught:
        check_envelope(etree.tostring(root))
    assert isinstance(caught.value, InputError)
    assert {p.path for p in caught.value.problems} == {
        "/Envelope/Body/SummaryOfFacts",
        "/Envelope/Header/Recipient/AuthorityId",
    }
    assert "/Envelope/Body/SummaryOfFacts" in str(caught.value)


HOSTILE = sorted(p for p in ATTACKS.glob("*.xml") if not p.name.startswith("simple"))


needs_attacks = pytest.mark.skipif(
    not ATTACKS.is_dir(), reason=f"conformance data not found at {ATTACKS}"
)


@needs_attacks
def test_attack_files_are_present() -> None:
    assert len(HOSTILE) >= 5


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_xml_is_refused_by_the_parser(path: Path) -> None:
    with pytest.raises(XMLInputError):
        check_envelope(path.read_bytes())


@needs_attacks
@pytest.mark.parametrize("name", ["simple.xml", "simple-ns.xml"])
def test_well_formed_non_envelope_is_refused_at_its_root(name: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        check_envelope((ATTACKS / name).read_bytes())
    [problem] = caught.value.problems
    assert problem.path in ("/root", "/{namespace}root")


@pytest.mark.parametrize("data", [b"", b"<Envelope", b"\x00\xff", "<x/>".encode("utf-16")])
def test_garbage_is_an_input_error(data: bytes) -> None:
    with pytest.raises(InputError):
        check_envelope(data)


def test_from_xml_refuses_a_root_missing_its_header() -> None:
    root = etree.Element(f"{{{ENVELOPE_NS}}}Envelope")
    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_xml(root)
    assert caught.value.problems[0].path == "/Envelope/Header"


def test_threads_each_get_their_own_problems() -> None:
    # lxml keeps a validator's error log on the instance; results must not cross threads.
    def broken(n: int) -> bytes:
        root = load()
        set_text(root, "Header/MessageId", f"bad-{n}")
        return etree.tostring(root)

    documents = [broken(n) for n in range(8)]
    results: dict[int, list[Problem]] = {}

    def work(n: int) -> None:
        for _ in range(30):
            results[n] = validate_envelope(parse_xml(documents[n]))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, problems in results.items():
        assert len(problems) == 1 and f"bad-{n}'" in problems[0].message


def test_the_schema_is_not_loaded_at_import_time() -> None:
    code = (
        "import gateway.envelope, gateway.xsd as x; "
        "assert not getattr(x._per_thread, 'schemas', {})"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True)
