"""What another gateway posts and we refuse (a notice, an evidence): recorded, then answered.

A refusal is an audit entry ``<what>.refused`` with the reason, the HTTP
status and problem code answered, and the SHA-256 and size of what came;
the bytes themselves are kept only when the caller says they verified. A
signature that cannot be checked now (revocation data out of reach) is no
refusal: it is ``<what>.deferred``, answered 503, and the peer posts the same
bytes again later. The entry goes on the message the peer has business with,
once that is known, else on no message.
"""

from __future__ import annotations

import hashlib
from typing import Generic, TypeVar

from gateway.audit import JSON, AuditEvent
from gateway.store import MessageStore

REVOCATION_UNAVAILABLE = "revocation-unavailable"


class PostRefused(Exception):
    """A posted document that is not taken; ``status`` and ``code`` are the HTTP answer.

    503 (``revocation-unavailable``) is not final: the same document may come again later.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code

    @property
    def try_later(self) -> bool:
        return self.status == 503


E = TypeVar("E", bound=PostRefused)


class RefusalTrail(Generic[E]):
    """Records the refusals of one posted document and makes the error to raise for each."""

    def __init__(
        self,
        store: MessageStore,
        what: str,
        actor: str,
        source: dict[str, JSON],
        message_id: str,
        data: bytes,
        error: type[E],
    ) -> None:
        self.store = store
        self.what = what  # "notice", "evidence": the entries are <what>.refused, <what>.deferred
        self.actor = actor  # "gateway:gw-ar", "sftp:AR-MJ"
        self.source = source  # who sent it, in every entry
        self.claimed = message_id[:255]  # the message it is said to be about
        self.about: str | None = None  # the message the entry goes on, once it is the sender's
        self.data = data
        self._error = error
        self._sha256: str | None = None

    def kept(self) -> str:
        """The received bytes, kept as they came (once): only once their signature verified."""
        if self._sha256 is None:
            self._sha256 = self.store.blobs.put(self.data).sha256
        return self._sha256

    def event(
        self, status: int, code: str, reason: str, *, keep: bool, deferred: bool = False
    ) -> AuditEvent:
        # ``sha256`` and ``size`` of what was read (for a 413, its first bytes); ``kept``
        # says whether the blob store holds those bytes.
        details: dict[str, JSON] = {
            **self.source, "message_id": self.claimed, "status": status,
            "code": code, "reason": reason[:2000], "size": len(self.data),
            "sha256": self.kept() if keep else hashlib.sha256(self.data).hexdigest(),
            "kept": keep,
        }  # fmt: skip
        kind = f"{self.what}.deferred" if deferred else f"{self.what}.refused"
        return AuditEvent(kind, self.actor, self.about, details)

    def refuse(self, status: int, code: str, reason: str, *, keep: bool = False) -> E:
        """A ``<what>.refused`` entry, and the error answering ``status``."""
        self.store.audit.append(self.event(status, code, reason, keep=keep))
        return self._error(status, code, reason)

    def defer(self, reason: str, *, record: bool = True) -> E:
        """Its signature cannot be checked now: 503, recorded as deferred, not as refused.

        ``record=False``: the same bytes were recorded as deferred before (a poller
        reading them again during one outage), so no second entry is written.
        """
        reason = f"{reason}; send the same {self.what} again later"
        if record:
            event = self.event(503, REVOCATION_UNAVAILABLE, reason, keep=False, deferred=True)
            self.store.audit.append(event)
        return self._error(503, REVOCATION_UNAVAILABLE, reason)
