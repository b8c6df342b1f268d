"""Example messages for the demos, benchmarks and tests: a request and its execution result.

Built from ``schemas/examples/mla-request.xml`` (a fictitious case) with
fresh ids; unsigned, for the sending authority's signer to sign.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from schemas import ENVELOPE_NS, examples_dir

_NS = {"e": ENVELOPE_NS}
_NAMES = {
    "ES": ("ES-MJ", "Ministerio de Justicia"),
    "AR": ("AR-MJ", "Ministerio de Justicia y Derechos Humanos"),
}


@dataclass(frozen=True)
class Example:
    envelope: bytes  # unsigned
    attachments: tuple[tuple[str, str, bytes], ...]  # (content id, media type, bytes)
    message_id: str
    conversation_id: str


def request(*, with_attachments: bool = True) -> Example:
    """ES-MJ asks AR-MJ for mutual legal assistance (the MLA example, new ids)."""
    root = etree.fromstring((examples_dir() / "mla-request.xml").read_bytes())
    message_id, conversation_id = str(uuid.uuid4()), str(uuid.uuid4())
    _set(root, "e:Header/e:MessageId", message_id)
    _set(root, "e:Header/e:ConversationId", conversation_id)
    attachments = []
    manifest = root.find("e:Attachments", _NS)
    if with_attachments:
        for item in root.findall("e:Attachments/e:Attachment", _NS):
            content_id = item.get("ContentId") or item.get("Id") or ""
            file_name = item.findtext("e:FileName", "", _NS)
            data = (examples_dir() / "attachments" / file_name).read_bytes()
            attachments.append((content_id, item.findtext("e:MediaType", "", _NS), data))
    elif manifest is not None:
        root.remove(manifest)
    return Example(_bytes(root), tuple(attachments), message_id, conversation_id)


def reply(to: Example, *, kind: str = "execution-result", by: str = "AR") -> Example:
    """The other side (AR-MJ, or ES-MJ with ``by="ES"``) answers ``to`` in the same
    conversation (no attachments)."""
    root = etree.fromstring(to.envelope)
    message_id = str(uuid.uuid4())
    _set(root, "e:Header/e:MessageId", message_id)
    header = root.find("e:Header", _NS)
    kind_element = root.find("e:Header/e:MessageKind", _NS)
    assert header is not None and kind_element is not None
    in_reply_to = root.find("e:Header/e:InReplyTo", _NS)  # ``to`` may be a reply itself
    if in_reply_to is None:
        in_reply_to = etree.Element(f"{{{ENVELOPE_NS}}}InReplyTo")
        kind_element.addprevious(in_reply_to)
    in_reply_to.text = to.message_id
    kind_element.text = kind
    _set(root, "e:Header/e:Created", datetime.now(UTC).isoformat(timespec="seconds"))
    for role, country in (("Sender", by), ("Recipient", "ES" if by == "AR" else "AR")):
        authority_id, name = _NAMES[country]
        _set(root, f"e:Header/e:{role}/e:AuthorityId", authority_id)
        _set(root, f"e:Header/e:{role}/e:Country", country)
        _set(root, f"e:Header/e:{role}/e:Name", name)
    manifest = root.find("e:Attachments", _NS)
    if manifest is not None:
        root.remove(manifest)
    return Example(_bytes(root), (), message_id, to.conversation_id)


def _set(root: Any, path: str, text: str) -> None:
    element = root.find(path, _NS)
    if element is None:
        raise LookupError(f"the example has no {path}")
    element.text = text


def _bytes(root: Any) -> bytes:
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return data
