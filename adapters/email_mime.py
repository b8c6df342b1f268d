"""The mail's MIME content: an outgoing message or notice as the entity to sign, and back.

An outgoing message becomes the ``multipart/mixed`` entity that the e-mail
channel (adapters.email) signs, and encrypts when the channel names a
certificate::

    multipart/mixed
      text/plain                        a short note for a person who opens the mail
      envelope.xml                      the signed envelope, byte for byte (no Content-ID)
      one part per attachment           base64, with its Content-ID and file name

A channel-override notice (gateway.notice) becomes a ``multipart/mixed`` of a
short text saying which reply went by which channel and why, and the
gateway-signed ``notice-<id>.xml``.

Unpacking goes the other way on the signed content of a received mail, never
the unsigned outer mail: exactly one ``envelope.xml``, and every attachment
named by its Content-ID. What cannot be read so raises ``Unusable``. The
outer headers are read only as details for the operator. A signed content
of notes and exactly one ``notice-<id>.xml`` part of the notice's media type,
and no envelope, is a gateway's notice (``notice_document``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import textwrap
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from urllib.parse import quote

from adapters.base import (
    IncomingPart,
    Outgoing,
    OutgoingNotice,
    OutgoingPart,
    PermanentError,
    TransientError,
)
from signing.smime import base64_lines

ENVELOPE = "envelope.xml"
NOTICE_MEDIA_TYPE = "application/xml"  # of the notice-<id>.xml part
_NOTICE_FILE = re.compile(r"notice-[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.xml")
CHUNK = 57 * 1024  # a multiple of 57 bytes: whole 76-character base64 lines
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_CONTENT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,255}")  # printable ASCII but < and >
_DETAIL_CHARS = 200


class Unusable(Exception):
    """The signed content is not a mail this channel understands."""


def header_value(value: str, limit: int = _DETAIL_CHARS) -> str:
    """``value`` on one line, cut to ``limit`` characters: for the details of an incoming mail."""
    return " ".join(value.split())[:limit]


# -- building ------------------------------------------------------------------


def message_entity(outgoing: Outgoing, limit: int) -> bytes:
    """The multipart/mixed entity that gets signed: a note, the envelope, the attachments."""
    total = len(outgoing.envelope) + sum(part.size for part in outgoing.attachments)
    if total > limit:
        raise PermanentError(
            f"the envelope and attachments come to {total} bytes, more than the "
            f"{limit} bytes this e-mail channel carries"
        )
    boundary = "=_mixed_" + secrets.token_hex(16)
    count = len(outgoing.attachments)
    note = (
        f"This e-mail carries the signed envelope of message {outgoing.message_id} "
        f"({ENVELOPE}) and {count} attachment{'s' if count != 1 else ''}.\r\n"
        "Its S/MIME signature and the envelope's XAdES signature make it authentic.\r\n"
    )
    out = [
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode(),
        f"--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"Content-Transfer-Encoding: 7bit\r\n\r\n{note}".encode(),
        f"\r\n--{boundary}\r\n".encode(),
        _part_headers("application/xml", ENVELOPE, None),
        base64_lines(outgoing.envelope),
    ]
    seen: set[str] = set()
    for part in outgoing.attachments:
        if part.content_id in seen:
            raise PermanentError(f"two attachments have the Content-ID <{part.content_id}>")
        seen.add(part.content_id)
        out.append(f"\r\n--{boundary}\r\n".encode())
        out.append(_part_headers(part.media_type, part.file_name, part.content_id))
        out.extend(_encoded(part))
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out)


def notice_entity(notice: OutgoingNotice) -> bytes:
    """The multipart/mixed entity that gets signed: the notice in words, its signed XML."""
    boundary = "=_mixed_" + secrets.token_hex(16)
    paragraphs = (
        notice.summary,
        f"The gateway's signed notice is attached ({notice.file_name}).",
    )
    text = (
        "\r\n\r\n".join(
            "\r\n".join(textwrap.wrap(p, 76, break_on_hyphens=False)) for p in paragraphs
        )
        + "\r\n"
    )
    return b"".join([
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode(),
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n".encode(),
        *((b"Content-Transfer-Encoding: 7bit\r\n\r\n", text.encode())
          if text.isascii() else
          (b"Content-Transfer-Encoding: base64\r\n\r\n", base64_lines(text.encode()))),
        f"\r\n--{boundary}\r\n".encode(),
        _part_headers(NOTICE_MEDIA_TYPE, notice.file_name, None),
        base64_lines(notice.document),
        f"\r\n--{boundary}--\r\n".encode(),
    ])  # fmt: skip


def _param(name: str, value: str) -> str:
    """A MIME parameter, RFC 2231-encoded when it is not plain printable ASCII."""
    if value.isascii() and value.isprintable() and not set(value) & {'"', "\\"}:
        return f'{name}="{value}"'
    return f"{name}*=utf-8''{quote(value, safe='')}"


def _part_headers(media_type: str, file_name: str | None, content_id: str | None) -> bytes:
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise PermanentError(f"{media_type!r} is not a media type that can head a mail part")
    lines = [f"Content-Type: {media_type}"]
    if file_name:
        lines[0] += ";\r\n " + _param("name", file_name)
    lines.append("Content-Transfer-Encoding: base64")
    if content_id is not None:
        if not _CONTENT_ID.fullmatch(content_id):
            raise PermanentError(f"Content-ID {content_id!r} cannot be written in a mail header")
        lines.append(f"Content-ID: <{content_id}>")
    disposition = "Content-Disposition: attachment"
    if file_name:
        disposition += ";\r\n " + _param("filename", file_name)
    lines.append(disposition)
    text = "\r\n".join(lines) + "\r\n\r\n"
    if any(len(line) > 998 for line in text.split("\r\n")):
        raise PermanentError(f"the file name {file_name!r} is too long for a mail header")
    return text.encode("ascii")


def _encoded(part: OutgoingPart) -> list[bytes]:
    """The attachment as base64 lines, checked against its manifest size and digest."""
    digest = hashlib.sha256()
    read = 0
    out: list[bytes] = []
    try:
        with part.open() as source:
            while read <= part.size:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                digest.update(chunk)
                out.append(base64_lines(chunk))
    except OSError as exc:
        raise TransientError(f"attachment <{part.content_id}> could not be read: {exc}") from None
    if read != part.size or digest.hexdigest() != part.sha256.lower():
        raise PermanentError(
            f"attachment <{part.content_id}>: the stored copy does not match its manifest "
            f"entry ({part.size} bytes, sha256 {part.sha256}); it was not sent"
        )
    return out


# -- unpacking -----------------------------------------------------------------


def outer_details(raw: bytes) -> dict[str, str]:
    """What the unsigned outer headers claim, for the operator only; nothing is decided on it."""
    headers = BytesParser(policy=compat32).parsebytes(raw[: 64 * 1024], headersonly=True)
    details: dict[str, str] = {}
    for name in ("Message-ID", "From", "Subject", "Date"):
        value = headers.get(name)
        if value is not None:
            details[name.lower()] = header_value(str(value))
    return details


def unpack(content: bytes) -> tuple[bytes, tuple[IncomingPart, ...]]:
    """The envelope and the attachments of the signed multipart entity."""
    entity = BytesParser(policy=compat32).parsebytes(content)
    if not entity.is_multipart():
        raise Unusable(f"the signed content is {entity.get_content_type()}, not multipart")
    envelopes: list[bytes] = []
    attachments: list[IncomingPart] = []
    seen: set[str] = set()
    for index, part in enumerate(entity.get_payload(), start=1):
        if not isinstance(part, Message):
            raise Unusable(f"part {index} of the signed content cannot be read")
        raw_id = part.get("Content-ID")
        file_name = part.get_filename()
        if raw_id is None and file_name is not None and file_name.lower() == ENVELOPE:
            envelopes.append(_decoded(part))
            continue
        if raw_id is None:
            if part.get_content_maintype() in ("text", "multipart") and file_name is None:
                continue  # a note for people reading the mail
            raise Unusable(
                f"part {index} ({file_name or part.get_content_type()}) has no Content-ID; "
                "attachments are matched to the envelope's manifest by Content-ID"
            )
        content_id = str(raw_id).strip().removeprefix("<").removesuffix(">").strip()
        if not content_id:
            raise Unusable(f"part {index} has an empty Content-ID")
        if content_id in seen:
            raise Unusable(f"two parts have the Content-ID <{content_id}>")
        seen.add(content_id)
        attachments.append(IncomingPart(content_id, part.get_content_type(), _decoded(part)))
    if len(envelopes) != 1:
        raise Unusable(
            f"the signed content holds {len(envelopes) or 'no'} {ENVELOPE} part"
            f"{'s' if len(envelopes) != 1 else ''}; exactly one is expected"
        )
    return envelopes[0], tuple(attachments)


def notice_document(content: bytes) -> bytes | None:
    """The notice XML when the signed entity is a notice (no envelope, notes and exactly
    one ``notice-*.xml`` part of the notice media type), else None."""
    entity = BytesParser(policy=compat32).parsebytes(content)
    if not entity.is_multipart():
        return None
    found: list[bytes] = []
    for part in entity.get_payload():
        if not isinstance(part, Message):
            return None
        file_name = part.get_filename()
        if file_name is None and part.get_content_maintype() == "text":
            continue  # the notice in words, for a person
        if (
            file_name is None
            or not _NOTICE_FILE.fullmatch(file_name)
            or part.get_content_type() != NOTICE_MEDIA_TYPE
            or part.get("Content-ID") is not None
        ):
            return None
        found.append(_decoded(part))
    return found[0] if len(found) == 1 else None


def _decoded(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    if part.is_multipart() or not isinstance(data, bytes):
        raise Unusable(f"the part {part.get_filename() or ''} holds no data")
    return data
