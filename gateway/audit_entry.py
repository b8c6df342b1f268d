"""One audit entry: its canonical encoding and decoding (see ``gateway.audit`` for the log).

An entry is one canonical JSON object (RFC 8785 style: keys sorted by UTF-16
code units, no whitespace, UTF-8, integers only)::

    {"actor":"ES-MJ","details":{...},"index":41,"kind":"message.accepted",
     "message_id":"ES-2026-0001","previous_root":"<hex MTH of entries 0..40>",
     "time":"2026-11-22T10:00:00.000000Z","v":1}

Its leaf hash is SHA-256(0x00 || bytes). Each entry names the root of the log
before it, so an entry moved, dropped or edited breaks the chain at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from gateway import merkle
from gateway.checkpoint import format_time
from signing.errors import RogatoryError

JSON: TypeAlias = bool | int | str | list["JSON"] | dict[str, "JSON"] | None

ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024
MAX_DEPTH = 16
_SAFE_INT = 2**53 - 1
_KIND = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_FIELDS = frozenset(
    {"v", "index", "time", "kind", "message_id", "actor", "details", "previous_root"}
)


class AuditError(RogatoryError):
    """An event cannot be logged, or a proof was asked for entries the log does not hold."""


@dataclass(frozen=True)
class AuditEvent:
    """Something that happened: what (``kind``), who did it, to which message, and details."""

    kind: str
    actor: str
    message_id: str | None = None
    details: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """A logged entry, decoded; ``encoded`` is the exact bytes that were hashed."""

    index: int
    time: str
    kind: str
    message_id: str | None
    actor: str
    details: dict[str, JSON]
    previous_root: bytes
    encoded: bytes

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.encoded)


def canonical_json(value: JSON) -> bytes:
    """RFC 8785-style bytes: sorted keys, no whitespace, UTF-8, no floats."""
    return _dumps(_canonical(value, 0))


# Built once (json.dumps builds one a call); canonical values hold no cycles to check for.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)


def _dumps(value: JSON) -> bytes:
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError("audit entries hold valid Unicode text only") from None


def _canonical(value: object, depth: int) -> JSON:
    if depth > MAX_DEPTH:
        raise AuditError(f"audit details nest deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind is str or value is None:
        return value  # type: ignore[return-value]  # a str
    # The usual object, done fast: ASCII keys sort the same by code point as by
    # UTF-16 code unit, and a plain string value needs no more than the depth check.
    if kind is dict and all(type(k) is str and k.isascii() for k in value):  # type: ignore[attr-defined]
        items: dict[str, Any] = value  # type: ignore[assignment]
        if depth < MAX_DEPTH:
            return {
                key: item if type(item) is str else _canonical(item, depth + 1)
                for key, item in sorted(items.items())
            }
        return {key: _canonical(item, depth + 1) for key, item in sorted(items.items())}
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        # Beyond 2^53 JSON readers disagree on the value, so the entry would not be canonical.
        if abs(value) > _SAFE_INT:
            raise AuditError(f"integer {value} is too large for an audit entry; use a string")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise AuditError("audit detail keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return {key: _canonical(value[key], depth + 1) for key in keys}
    raise AuditError(f"a {type(value).__name__} cannot be part of an audit entry")


def encode_entry(index: int, when: datetime, event: AuditEvent, previous_root: bytes) -> bytes:
    """The canonical bytes of entry ``index``; ``AuditError`` if the event is not loggable."""
    if not _KIND.fullmatch(event.kind):
        raise AuditError(f"event kind {event.kind!r} must look like 'message.accepted'")
    if not event.actor or len(event.actor) > 255:
        raise AuditError("an audit event needs an actor of at most 255 characters")
    if event.message_id is not None and not 0 < len(event.message_id) <= 255:
        raise AuditError("a message id in the audit log has 1 to 255 characters")
    # The entry's fields written in canonical (sorted) order: only values need canonicalizing.
    entry = {
        "actor": _canonical(event.actor, 1),
        "details": _canonical(event.details, 1),
        "index": _canonical(index, 1),
        "kind": _canonical(event.kind, 1),
        "message_id": _canonical(event.message_id, 1),
        "previous_root": previous_root.hex(),
        "time": format_time(when),
        "v": ENTRY_VERSION,
    }
    encoded = _dumps(entry)
    if len(encoded) > MAX_ENTRY_BYTES:
        raise AuditError(f"the audit entry is larger than {MAX_ENTRY_BYTES} bytes")
    return encoded


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def decode_entry(encoded: bytes) -> AuditEntry:
    """An ``AuditEntry`` from logged bytes; ``ValueError`` says why they are not one."""
    if len(encoded) > MAX_ENTRY_BYTES:
        raise ValueError("longer than any entry the gateway writes")
    obj = json.loads(encoded, parse_constant=_reject_constant)
    if not isinstance(obj, dict) or obj.keys() != _FIELDS:
        raise ValueError("not an audit entry object with exactly the entry fields")
    index, message_id, details = obj["index"], obj["message_id"], obj["details"]
    if obj["v"] != ENTRY_VERSION or type(index) is not int or index < 0:
        raise ValueError("unknown entry version or bad index")
    if not all(isinstance(obj[k], str) for k in ("time", "kind", "actor", "previous_root")):
        raise ValueError("time, kind, actor and previous_root must be strings")
    if not (message_id is None or isinstance(message_id, str)) or not isinstance(details, dict):
        raise ValueError("bad message_id or details")
    previous_root = bytes.fromhex(obj["previous_root"])
    if len(previous_root) != merkle.HASH_SIZE:
        raise ValueError("previous_root is not a SHA-256 hash")
    return AuditEntry(
        index, obj["time"], obj["kind"], message_id, obj["actor"], details, previous_root, encoded
    )
